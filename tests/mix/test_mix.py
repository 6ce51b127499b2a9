"""A mix of three sources in three formats: budgets, repeats, the grouped eval split, decontamination,
determinism across workers and seeds, kill and --resume, and the ``datasets`` view (issue 30)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import load, sftdata_cli, snapshot
from tests.mix.recipe_data import build

BUDGET = 30_000


def rows(folder: Path) -> list[dict]:
    """Every row of a split folder, in shard order."""
    manifest = json.loads((folder / "manifest.json").read_text())
    out = []
    for entry in manifest["shards"]:
        with pa.OSFile(str(folder / entry["file"])) as f:
            out += pa.ipc.open_stream(f).read_all().select(["id", "input_ids", "prompt_hash", "source"]).to_pylist()
    return out


def without_audit(snap: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in snap.items() if not k.endswith("audit.json")}


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("mix")
    recipe = build(d, budget=BUDGET)
    out = d / "out"
    r = sftdata_cli("run", recipe, "--output", out, "--workers", "2", "--no-audit")
    assert r.returncode == 0, r.stderr
    return recipe, out


def both(out: Path) -> list[dict]:
    return rows(out / "train") + rows(out / "eval")


def encoded(record: dict, fmt: str, source: str, line: int):
    import sftdata

    return sftdata.encode(record, input_format=fmt, source=source, line=line)


def test_token_budget_is_delivered_exactly_as_defined(mix):
    recipe, out = mix
    kept = [r for r in both(out) if r["source"] == "chat"]
    used = sum(len(r["input_ids"]) for r in kept)
    assert used <= BUDGET
    quarantined = {json.loads(q)["id"] for q in (out / "train" / "quarantine.jsonl").read_text().splitlines()}
    ids = {r["id"] for r in kept}
    not_taken = []
    for i, line in enumerate((recipe.parent / "chat.jsonl").read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
            row = encoded(rec, "messages", "chat.jsonl", i)
        except Exception:  # noqa: BLE001 - a rejected line: in the quarantine
            continue
        if row.id not in ids and row.id not in quarantined:
            not_taken.append(len(row.input_ids))
    assert not_taken, "the budget must leave records out for this test to mean anything"
    assert all(n > BUDGET - used for n in not_taken), "a record that fits what is left was skipped"
    manifest = json.loads((out / "train" / "manifest.json").read_text())
    assert manifest["mix"]["sources"]["chat"]["budget"]["delivered"] == {"tokens": used}


def test_fraction_and_repeat_counts(mix):
    _, out = mix
    manifest = json.loads((out / "train" / "manifest.json").read_text())["mix"]["sources"]
    share = manifest["share"]
    valid = share["records_read"] - sum(share["rejected"].values())
    got = [r for r in both(out) if r["source"] == "share"]
    assert len(got) == math.floor(0.5 * valid + 0.5) and abs(len(got) - 0.5 * valid) <= 1
    alpaca = Counter(r["id"].split("#r")[0] for r in both(out) if r["source"] == "alpaca")
    assert len(alpaca) == 120 and set(alpaca.values()) == {2, 3}
    assert sum(alpaca.values()) == 300 and Counter(alpaca.values())[3] == 60
    assert manifest["alpaca"]["sampling_factor"] == 2.5


def test_split_grouped_by_prompt_and_sized_per_source(mix):
    _, out = mix
    train, evals = rows(out / "train"), rows(out / "eval")
    assert evals and not {r["prompt_hash"] for r in train} & {r["prompt_hash"] for r in evals}
    ids = [r["id"] for r in train + evals]
    assert len(ids) == len(set(ids)), "every copy has its own id"
    for source in ("chat", "share", "alpaca"):
        mine = [r for r in train + evals if r["source"] == source]
        largest = max(Counter(r["prompt_hash"] for r in mine).values())
        n_eval = sum(r["source"] == source for r in evals)
        assert abs(n_eval - 0.05 * len(mine)) < largest + 0.5, source


def test_decontaminated_prompts_are_nowhere(mix):
    recipe, out = mix
    bench = [json.loads(x) for x in (recipe.parent / "bench.jsonl").read_text().splitlines()]
    prompts = {encoded(b, "messages", "bench.jsonl", i).prompt_hash for i, b in enumerate(bench, 1)}
    assert not prompts & {r["prompt_hash"] for r in both(out)}
    quarantine = [json.loads(q) for q in (out / "train" / "quarantine.jsonl").read_text().splitlines()]
    assert sum(q["reason"] == "contaminated" for q in quarantine) == 3


def test_dedupe_across_sources_names_the_kept_copy(mix):
    _, out = mix
    quarantine = [json.loads(q) for q in (out / "train" / "quarantine.jsonl").read_text().splitlines()]
    dup = [q for q in quarantine if q["reason"] == "duplicate"]
    assert len(dup) == 1 and dup[0]["id"] == "sg-copy" and dup[0]["duplicate_of_source"] == "chat"


def test_load_from_disk_gives_both_splits(mix):
    _, out = mix
    ds = load(out)
    assert set(ds) == {"train", "eval"} and "source" in ds["train"].column_names
    assert ds["eval"].num_rows == len(rows(out / "eval"))


@pytest.mark.slow
def test_one_worker_same_bytes_and_another_seed_another_subset(mix, tmp_path):
    recipe, out = mix
    one = tmp_path / "one"
    r = sftdata_cli("run", recipe, "--output", one, "--workers", "1", "--no-audit")
    assert r.returncode == 0, r.stderr
    assert without_audit(snapshot(one)) == without_audit(snapshot(out))
    other = tmp_path / "other.yaml"
    other.write_text(recipe.read_text().replace("seed: 7", "seed: 8"))
    r = sftdata_cli("run", other, "--output", tmp_path / "seed8", "--workers", "2", "--no-audit")
    assert r.returncode == 0, r.stderr
    pick = {r["id"] for r in both(tmp_path / "seed8") if r["source"] == "share"}
    assert pick != {r["id"] for r in both(out) if r["source"] == "share"}


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["chunk_done:3", "chunk_done:12", "worker_chunk:4", "before_manifest:1",
                                   "before_manifest:2"])
def test_kill_and_resume_give_identical_bytes(mix, tmp_path, fault):
    recipe, out = mix
    dest = tmp_path / "out"
    r = sftdata_cli("run", recipe, "--output", dest, "--workers", "1", "--no-audit", env={"SFTDATA_FAULT": fault})
    assert r.returncode != 0
    assert not (dest / "dataset_dict.json").exists()
    r = sftdata_cli("run", recipe, "--output", dest, "--workers", "2", "--no-audit", "--resume")
    assert r.returncode == 0, r.stderr
    assert without_audit(snapshot(dest)) == without_audit(snapshot(out))


def test_recipe_refusals_are_one_line(tmp_path):
    recipe = build(tmp_path)
    text = recipe.read_text()
    cases = {
        "twice": (text.replace("name: share", "name: chat"), "is used twice"),
        "too many": (text.replace("take: {fraction: 0.5}", "take: {records: 100000}"), "has only"),
        "bad take": (text.replace("take: {fraction: 0.5}", "take: {percent: 5}"), "sources/1/take"),
    }
    for name, (body, needle) in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.yaml"
        bad.write_text(body)
        r = sftdata_cli("run", bad, "--output", tmp_path / f"o-{name.replace(' ', '_')}", "--no-audit")
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)
        assert not (tmp_path / f"o-{name.replace(' ', '_')}" / "train").exists()
    r = sftdata_cli("run", recipe, "--input", recipe, "--output", tmp_path / "o", "--no-audit")
    assert r.returncode == 2 and "sources" in r.stderr


def test_output_inside_a_source_folder_is_refused(tmp_path):
    recipe = build(tmp_path)
    folder = tmp_path / "data"
    folder.mkdir()
    (tmp_path / "chat.jsonl").rename(folder / "chat.jsonl")
    recipe.write_text(recipe.read_text().replace(str(tmp_path / "chat.jsonl"), str(folder)))
    r = sftdata_cli("run", recipe, "--output", folder / "out", "--no-audit")
    assert r.returncode == 2 and "inside the input folder" in r.stderr, r.stderr


def test_resume_with_another_seed_is_refused(mix, tmp_path):
    recipe, out = mix
    other = tmp_path / "other.yaml"
    other.write_text(recipe.read_text().replace("seed: 7", "seed: 9"))
    r = sftdata_cli("run", other, "--output", out, "--resume", "--no-audit")
    assert r.returncode == 1 and "another recipe" in r.stderr, r.stderr  # as a plain run with other settings


def test_records_too_long_to_keep_are_not_counted_valid(tmp_path):
    """Without a token budget the first pass encodes only what encoding could reject: a record over
    max_length (truncation: drop) is still not a valid record of its source."""
    records = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                            {"role": "assistant", "content": f"answer {i}"}]} for i in range(18)]
    records += [{"id": f"long{i}", "messages": [{"role": "user", "content": "word " * 400},
                                                {"role": "assistant", "content": "ok"}]} for i in range(2)]
    from tests.conftest import write_jsonl

    src = write_jsonl(tmp_path / "in.jsonl", records)
    body = f"seed: 3\nsources:\n  - name: a\n    input: {src}\n    take: {{records: N}}\nstages:\n  label: {{max_length: 256}}\n"
    ok, over = tmp_path / "ok.yaml", tmp_path / "over.yaml"
    ok.write_text(body.replace("N", "18"))
    over.write_text(body.replace("N", "19"))
    r = sftdata_cli("run", ok, "--output", tmp_path / "ok", "--no-audit")
    assert r.returncode == 0, r.stderr
    assert len(load(tmp_path / "ok")) == 18
    r = sftdata_cli("run", over, "--output", tmp_path / "over", "--no-audit")
    assert r.returncode == 2 and "only 18 valid" in r.stderr, r.stderr


def test_accounting_adds_up_per_source_and_split(mix):
    _, out = mix
    train = json.loads((out / "train" / "manifest.json").read_text())
    evals = json.loads((out / "eval" / "manifest.json").read_text())
    assert train["mix"]["sources"] == evals["mix"]["sources"] and evals["mix"]["split"] == "eval"
    got = Counter((r["source"], split) for split in ("train", "eval") for r in rows(out / split))
    for name, s in train["mix"]["sources"].items():
        assert {k: v["rows"] for k, v in s["splits"].items()} == {"train": got[(name, "train")],
                                                                  "eval": got[(name, "eval")]}
        taken = {r["id"].split("#r")[0] for r in both(out) if r["source"] == name}
        assert s["records_read"] == sum(s["rejected"].values()) + len(taken) + s["records_not_taken"], name
    assert train["mix"]["sources"]["chat"]["records_read"] == 246  # 240 records and 6 broken lines
    assert train["mix"]["sources"]["share"]["duplicates_removed"] == 1


def test_a_mix_without_rows_fails(tmp_path):
    from tests.conftest import write_jsonl

    src = write_jsonl(tmp_path / "in.jsonl", ['{"messages": []}', "not json"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"sources:\n  - name: a\n    input: {src}\n")
    r = sftdata_cli("run", recipe, "--output", tmp_path / "out", "--no-audit")
    assert r.returncode == 1 and "wrote no rows" in r.stderr, r.stderr
    assert (tmp_path / "out" / "manifest.json").exists()
