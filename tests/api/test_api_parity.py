"""Parity of the Python API with the command line's work (issue 33): ``Dataset.map`` with
``sftdata.map_fn`` gives the ids, labels and rejections of ``sftdata run``, for 1 and 2 processes;
auditing a ``Dataset`` in memory gives the report of auditing it saved."""

from __future__ import annotations

import json

import pytest

import sftdata
from tests.conftest import ROOT, SHARED_CORPUS, write_jsonl
from tests.synth import generate_records

datasets = pytest.importorskip("datasets")

# beside the checkout (tests.conftest), or beside the folder of worktrees a helper's checkout is in
CORPORA = (SHARED_CORPUS, ROOT.parent.parent / "shared" / "corpora" / SHARED_CORPUS.name)
SETTINGS = {"template": "llama3.1", "max_length": 1024}


def _broken_records() -> list[dict]:
    """Records that parse but are refused: the map must report them as the quarantine does."""
    ok = generate_records(3, seed=11, tools=False)
    no_answer = {"id": "bad-no-answer", "messages": [m for m in ok[0]["messages"] if m["role"] != "assistant"]}
    empty = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}
    role = {"id": "bad-role", "messages": [{"role": "bot", "content": "hi"}, *ok[1]["messages"]]}
    long = {"id": "bad-long", "messages": [{"role": "user", "content": "x"},
                                           {"role": "assistant", "content": "token " * 2000}]}
    return [no_answer, empty, role, long]


def _prepared(tmp, lines: list[str]):
    """(folder, corpus file): ``lines`` written and run through ``sftdata run``."""
    src = tmp / "corpus.jsonl"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    sftdata.run(inputs=src, output=tmp / "out", workers=2, audit=False, **SETTINGS)
    return tmp


def _run_and_map(tmp, num_proc: int):
    shards = sftdata.load(tmp / "out").dataset
    quarantine = [json.loads(q) for q in (tmp / "out" / "quarantine.jsonl").read_text().splitlines()]
    ds = datasets.Dataset.from_json(str(tmp / "corpus.jsonl"), cache_dir=str(tmp / f"hf-cache-{num_proc}"))
    mapped = ds.map(sftdata.map_fn(source="corpus.jsonl", **SETTINGS), batched=True, with_indices=True,
                    batch_size=64, num_proc=num_proc, load_from_cache_file=False)
    return shards, quarantine, mapped


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    records = generate_records(240, seed=21, tools=True)
    records[7:7] = _broken_records()
    return _prepared(tmp_path_factory.mktemp("gen"), [json.dumps(r, ensure_ascii=False) for r in records])


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    corpus = next((p for p in CORPORA if p.is_file()), None)
    if corpus is None:
        pytest.skip(f"{SHARED_CORPUS} is not present")
    lines = corpus.read_text(encoding="utf-8").splitlines()[::9]  # every source of the mix, 311 records
    return _prepared(tmp_path_factory.mktemp("mix"), lines)


def _check_parity(shards, quarantine, mapped) -> None:
    assert mapped.column_names == [*shards.column_names, "reason", "message"]
    assert mapped.features["input_ids"] == shards.features["input_ids"]  # int32 lists, as the shards
    rows = mapped.filter(lambda r: r["reason"] is None)
    refused = mapped.filter(lambda r: r["reason"] is not None)
    ours, theirs = rows.remove_columns(["reason", "message"]).to_dict(), shards.to_dict()
    assert ours["id"] == theirs["id"]
    assert ours["input_ids"] == theirs["input_ids"] and ours["labels"] == theirs["labels"]
    assert ours["content_hash"] == theirs["content_hash"] and ours["prompt_hash"] == theirs["prompt_hash"]
    assert [(r["id"], r["reason"], r["message"]) for r in refused] == \
        [(q["id"], q["reason"], q["message"]) for q in quarantine]
    assert all(r["input_ids"] is None and r["labels"] is None for r in refused)


@pytest.mark.parametrize("num_proc", [1, 2])
def test_map_matches_run_on_a_generated_corpus(generated, num_proc):
    shards, quarantine, mapped = _run_and_map(generated, num_proc)
    assert {q["reason"] for q in quarantine} >= {"no_assistant", "empty_assistant", "unknown_role", "too_long"}
    _check_parity(shards, quarantine, mapped)


@pytest.mark.parametrize("num_proc", [1, 2])
def test_map_matches_run_on_the_shared_corpus(mix, num_proc):
    shards, quarantine, mapped = _run_and_map(mix, num_proc)
    assert len(shards) > 300 and any(i.startswith("glaive-toolcall") for i in shards["id"])
    _check_parity(shards, quarantine, mapped)


def test_encode_dataset_splits_rows_and_rejected(tmp_path):
    records = generate_records(30, seed=8) + _broken_records()
    src = write_jsonl(tmp_path / "in.jsonl", records)
    ds = datasets.Dataset.from_json(str(src), cache_dir=str(tmp_path / "hf-cache"))
    out = sftdata.encode_dataset(ds, num_proc=2, **SETTINGS)
    assert out.rows.column_names == ["id", "input_ids", "labels", "content_hash", "prompt_hash"]
    assert len(out.rows) == 30 and out.rows["id"] == [r["id"] for r in records[:30]]
    assert out.rejected["reason"] == ["no_assistant", "empty_assistant", "unknown_role", "too_long"]
    assert out.rejected["id"][1] == "dataset:32"  # no id of its own: source:row, as a run names it


def test_map_without_indices_refuses_records_without_an_id():
    fn = sftdata.map_fn()
    batch = {"messages": [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]]}
    with pytest.raises(sftdata.UsageError, match="with_indices=True"):
        fn(batch)
    table = fn({"id": ["x"], **batch})
    assert table.column("id").to_pylist() == ["x"] and table.column("reason").to_pylist() == [None]


def _comparable(report) -> dict:
    out = report.to_json()
    out.pop("path")
    return out


def test_auditing_a_dataset_in_memory_is_auditing_it_saved(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", generate_records(40, seed=13, tools=True))
    sftdata.run(inputs=src, output=tmp_path / "out", workers=1, audit=False, template="llama3.1")
    rows = sftdata.load(tmp_path / "out").dataset
    good = datasets.Dataset.from_dict(rows.to_dict(), features=rows.features)
    bad = good.map(lambda r, i: {"labels": r["input_ids"] if i % 3 == 0 else r["labels"]}, with_indices=True)
    both = datasets.DatasetDict({"train": good, "eval": bad})
    for data in (good, bad, both):
        report = sftdata.audit_data(data)
        saved = tmp_path / f"saved-{id(data)}"
        data.save_to_disk(str(saved))
        assert _comparable(report) == _comparable(sftdata.audit_data(str(saved)))
        assert report.path == f"in-memory {type(data).__name__}"
    flagged = sftdata.audit_data(bad)
    assert not flagged.ok and flagged.violation_counts["prompt_trained"] == 14
    assert {v["id"] for v in flagged.violations if v["rule"] == "prompt_trained"} == \
        {rows["id"][i] for i in range(0, 40, 3)}
    assert sftdata.audit_data(good, min_trained_fraction=0.99).statuses["min_trained_fraction"] == "fail"


def test_an_in_memory_report_keeps_its_rows_while_it_lives(tmp_path):
    import gc
    from pathlib import Path

    from sftdata.audit.html import render_html

    src = write_jsonl(tmp_path / "in.jsonl", generate_records(6, seed=17))
    rows = sftdata.encode_dataset(datasets.Dataset.from_json(str(src), cache_dir=str(tmp_path / "c"))).rows
    report = sftdata.audit_data(rows)
    saved = Path(report.location)
    assert saved.is_dir() and "gen-000000" in render_html(report)  # the HTML page reads its sample rows
    del report
    gc.collect()
    assert not saved.parent.exists()  # the temporary copy goes with the report


def test_map_reads_binary_text_as_a_run_reads_a_datasets_folder(tmp_path):
    ds = datasets.Dataset.from_dict({"id": ["good", "bad"], "messages": [
        [{"role": "user", "content": b"hi"}, {"role": "assistant", "content": b"hello"}],
        [{"role": "user", "content": b"\xff\xfe"}, {"role": "assistant", "content": b"ok"}]]})
    ds.save_to_disk(str(tmp_path / "in"))
    sftdata.run(inputs=tmp_path / "in", output=tmp_path / "out", workers=1, audit=False)
    (q,) = [json.loads(line) for line in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    mapped = ds.map(sftdata.map_fn(), batched=True, with_indices=True)
    assert mapped["reason"] == [None, q["reason"]] and mapped["message"][1] == q["message"]
    assert q["reason"] == "invalid_utf8"
    assert mapped["input_ids"][0] == sftdata.load(tmp_path / "out").dataset["input_ids"][0]
