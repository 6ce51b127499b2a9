"""Content parts render like strings; planted duplicates and train/eval overlap are found exactly."""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner

from sftdata.errors import UnusableRunError
from sftdata.overlap import find_overlap, overlap_cmd
from sftdata.runner import run_pipeline
from tests.conftest import SHARED_CORPUS, settings, write_jsonl
from tests.synth import generate_records


def rows(out):
    import datasets

    ds = datasets.load_from_disk(str(out))
    return list(zip(ds["id"], ds["input_ids"], ds["labels"], strict=True))


def as_parts(rec: dict, variant: int) -> dict:
    rec = copy.deepcopy(rec)
    for m in rec["messages"]:
        c = m.get("content")
        if isinstance(c, str) and len(c) > 1:
            cut = len(c) // 2
            key = "text" if variant % 2 else "value"
            m["content"] = [{"type": "text", key: c[:cut]}, {"type": "text", key: c[cut:]}]
        variant += 1
    return rec


def test_parts_and_strings_give_identical_rows(tmp_path):
    recs = generate_records(200, seed=41)
    if SHARED_CORPUS.is_file():  # the whole real corpus too, when present
        recs += [json.loads(x) for x in SHARED_CORPUS.read_text(encoding="utf-8").splitlines() if x.strip()]
    a = write_jsonl(tmp_path / "s.jsonl", recs)
    b = write_jsonl(tmp_path / "p.jsonl", [as_parts(r, i) for i, r in enumerate(recs)])
    run_pipeline(settings(), [str(a)], tmp_path / "a")
    run_pipeline(settings(), [str(b)], tmp_path / "b")
    ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert len(ra) == len(recs) and ra == rb


def test_non_text_parts_are_quarantined_with_type_and_pointer(tmp_path):
    rec = {"id": "img", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
        {"role": "assistant", "content": [{"type": "reasoning", "text": "hmm"}, {"type": "text", "text": "A cat."}]}]}
    src = write_jsonl(tmp_path / "a.jsonl", [rec])
    with pytest.raises(UnusableRunError, match="no rows"):  # committed, then reported as unusable
        run_pipeline(settings(), [str(src)], tmp_path / "o")
    q = json.loads((tmp_path / "o" / "quarantine.jsonl").read_text())
    assert q["reason"] == "unsupported_part" and q["pointer"] == "/messages/0/content/1"
    assert "image_url" in q["message"]
    # reasoning can be mapped to drop; image parts still refuse
    m = run_pipeline(settings(parts={"reasoning": "drop", "image_url": "drop"}), [str(src)], tmp_path / "o2").manifest
    assert m["counts"]["records_written"] == 1


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    d = tmp_path_factory.mktemp("dup")
    base = generate_records(120, seed=43)
    dups = []
    for k, i in enumerate((3, 17, 17, 60, 99)):
        twin = copy.deepcopy(base[i])
        twin["id"] = f"dup-{k}"
        for m in twin["messages"]:  # whitespace the template trims must not hide a duplicate
            if m["role"] in ("user", "assistant") and isinstance(m.get("content"), str):
                m["content"] = "  " + m["content"] + "\n"
        dups.append((twin, base[i]["id"]))
    recs = list(base)
    for j, (twin, _) in enumerate(dups):
        recs.insert(20 + 25 * j, twin)
    src = write_jsonl(d / "in.jsonl", recs)
    return src, dups


def test_planted_duplicates_are_reported_exactly(planted, tmp_path):
    src, dups = planted
    m = run_pipeline(settings(chunk_size=8 << 10), [str(src)], tmp_path / "o", workers=2).manifest
    lines = (tmp_path / "o" / "duplicates.jsonl").read_bytes().splitlines()
    got = {(d["id"], d["duplicate_of"]) for d in map(json.loads, lines)}
    want = {(t["id"], first) for t, first in dups}
    assert m["counts"]["duplicate_records"] == 5
    # dup-1 and dup-2 both copy base[17]; whichever comes later in the input is the duplicate
    ids_later = {a for a, _ in got}
    assert ids_later == {t["id"] for t, _ in dups} and got == want


def test_dedupe_removes_exactly_them_for_any_workers(planted, tmp_path):
    src, dups = planted
    outs = []
    for w in (1, 2):
        out = tmp_path / f"w{w}"
        m = run_pipeline(settings(chunk_size=8 << 10, dedupe="exact"), [str(src)], out, workers=w).manifest
        assert m["counts"]["rejected"] == {"duplicate": 5}
        q = [json.loads(x) for x in (out / "quarantine.jsonl").read_bytes().splitlines()]
        assert {(e["id"], e["duplicate_of"]) for e in q} == {(t["id"], f) for t, f in dups}
        assert m["counts"]["records_written"] == 120
        outs.append(out)
    for f in sorted(p.name for p in outs[0].iterdir()):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f


def test_overlap_finds_exactly_the_planted_overlap(tmp_path):
    train = generate_records(150, seed=44)
    evals = generate_records(40, seed=45)
    planted = {}
    for k, i in enumerate((5, 30, 77)):
        twin = copy.deepcopy(train[i])
        twin["id"] = f"eval-copy-{k}"
        evals.append(twin)
        planted[twin["id"]] = train[i]["id"]
    prompt_only = copy.deepcopy(train[100])
    prompt_only["id"] = "eval-prompt-only"
    for m in prompt_only["messages"]:
        if m["role"] == "assistant" and isinstance(m.get("content"), str):
            m["content"] = "A different answer."
    evals.append(prompt_only)
    a = write_jsonl(tmp_path / "train.jsonl", train)
    b = write_jsonl(tmp_path / "eval.jsonl", evals)
    run_pipeline(settings(), [str(a)], tmp_path / "A")
    run_pipeline(settings(packing="bfd", max_length=4096), [str(b)], tmp_path / "B")
    rep = find_overlap(tmp_path / "A", tmp_path / "B")
    assert {(m["a_ids"][0], m["b_ids"][0]) for m in rep.matches} == {(v, k) for k, v in planted.items()}
    prompts = find_overlap(tmp_path / "A", tmp_path / "B", prompts=True)
    pairs = {(m["a_ids"][0], m["b_ids"][0]) for m in prompts.matches}
    assert (train[100]["id"], "eval-prompt-only") in pairs and len(pairs) == 4
    runner = CliRunner()
    res = runner.invoke(overlap_cmd, [str(tmp_path / "A"), str(tmp_path / "B"), "--fail-on-overlap",
                                      "--json", str(tmp_path / "o.json")])
    assert res.exit_code == 1 and "3 shared hash" in res.output
    assert json.loads((tmp_path / "o.json").read_text())["a_records"] == 3
    clean = runner.invoke(overlap_cmd, [str(tmp_path / "A"), str(tmp_path / "A"), "--fail-on-overlap"])
    assert clean.exit_code == 1
    disjoint = runner.invoke(overlap_cmd, [str(tmp_path / "A"), str(tmp_path / "B"), "--prompts"])
    assert disjoint.exit_code == 0
