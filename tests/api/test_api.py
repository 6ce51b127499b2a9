"""The Python API (issue 33): one record, a run, a prepared folder, validation, and its errors."""

from __future__ import annotations

import json

import pytest

import sftdata
from sftdata.config import ConfigError
from sftdata.errors import FolderNotVerified, RecordRejected, SftdataError, UsageError
from tests.conftest import write_jsonl
from tests.synth import generate_broken_lines, generate_records

CHAT = {"id": "c-1", "messages": [{"role": "system", "content": "Be terse."},
                                  {"role": "user", "content": "2 + 2?"},
                                  {"role": "assistant", "content": "4."}]}


def _quarantine(folder) -> dict[int, dict]:
    lines = (folder / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()
    return {q["line"]: q for q in map(json.loads, lines)}


def test_encode_gives_the_row_a_run_writes(tmp_path):
    records = [CHAT, *generate_records(30, seed=5, tools=True)]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    summary = sftdata.run(inputs=src, output=tmp_path / "out", template="llama3.1", max_length=512,
                          truncation="truncate", workers=1, audit=False)
    rows = sftdata.load(summary.output).dataset.to_dict()
    for i, rec in enumerate(records):
        row = sftdata.encode(rec, template="llama3.1", max_length=512, truncation="truncate")
        assert (row.id, row.input_ids, row.labels) == (rows["id"][i], rows["input_ids"][i], rows["labels"][i])
        assert (row.content_hash, row.prompt_hash) == (rows["content_hash"][i], rows["prompt_hash"][i])
        assert row.trained_tokens == sum(1 for x in row.labels if x != -100)
    # the same record as its JSON line, and a pipeline document as a dict: the same row
    line = json.dumps(CHAT)
    assert sftdata.encode(line, pipeline={"stages": {"render": {"template": "llama3.1"}}}) == \
        sftdata.encode(CHAT, template="llama3.1")


def test_encode_raises_the_quarantine_reason_and_message(tmp_path):
    broken = generate_broken_lines(16, seed=3)
    lines = [json.dumps(r) for r in generate_records(4, seed=1)] + [line for line, _ in broken]
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sftdata.run(inputs=src, output=tmp_path / "out", workers=1, audit=False)
    quarantine = _quarantine(tmp_path / "out")
    assert len(quarantine) == len(broken)
    for n, line in enumerate(lines, start=1):
        if n not in quarantine:
            sftdata.encode(line, source="mixed.jsonl", line=n)
            continue
        with pytest.raises(RecordRejected) as caught:
            sftdata.encode(line, source="mixed.jsonl", line=n)
        q = quarantine[n]
        assert (caught.value.reason, caught.value.message, caught.value.id) == (q["reason"], q["message"], q["id"])
        assert caught.value.exit_code == 2 and isinstance(caught.value, SftdataError)


def test_encode_refuses_a_row_longer_than_max_length_as_the_run_does():
    long = {"id": "long", "messages": [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "word " * 400}]}
    with pytest.raises(RecordRejected) as caught:
        sftdata.encode(long, max_length=64)
    assert caught.value.reason == "too_long" and caught.value.id == "long"
    row = sftdata.encode(long, max_length=64, truncation="truncate")
    assert row.truncated and len(row.input_ids) == 64


def test_settings_errors_are_the_config_errors():
    with pytest.raises(ConfigError) as caught:
        sftdata.encode(CHAT, template="llama9")
    assert "template" in str(caught.value) and caught.value.exit_code == 2
    with pytest.raises(ConfigError, match="unknown setting 'no_such'"):
        sftdata.encode(CHAT, no_such=1)  # type: ignore[call-arg]
    with pytest.raises(UsageError, match="settings given twice"):
        sftdata.encode(CHAT, pipeline=sftdata.pipeline_settings(), template="llama3")
    with pytest.raises(UsageError, match="dedupe and packing"):
        sftdata.map_fn(dedupe="exact")


def test_run_returns_the_summary_with_its_audit(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", generate_records(20, seed=2))
    summary = sftdata.run(inputs=[str(src)], output=tmp_path / "out", workers=1)
    assert summary.manifest["counts"]["records_written"] == 20 and summary.chunks_total >= 1
    assert summary.audit is not None and summary.audit.ok
    on_disk = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert on_disk == json.loads(json.dumps(summary.audit.to_json(), sort_keys=True))
    with pytest.raises(SftdataError, match="not empty|non-empty|--overwrite"):
        sftdata.run(inputs=[str(src)], output=tmp_path / "out", workers=1)


def test_load_verifies_the_folder_first(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", generate_records(12, seed=4))
    sftdata.run(inputs=src, output=tmp_path / "out", workers=1, audit=False)
    prepared = sftdata.load(tmp_path / "out")
    assert len(prepared.dataset) == 12 and prepared.integrity.ok
    assert prepared.manifest["totals"]["rows"] == 12
    shard = next((tmp_path / "out").glob("shard-*.arrow"))
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(FolderNotVerified, match=shard.name) as caught:
        sftdata.load(tmp_path / "out")
    assert caught.value.exit_code == 1 and not caught.value.report.ok
    assert len(sftdata.load(tmp_path / "out", verify=False).dataset) == 12
    with pytest.raises(UsageError):
        sftdata.load(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="reads a local folder"):
        sftdata.load("s3://bucket/prepared")  # refused before any network call
    data[-20] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert len(sftdata.load(f"file://{tmp_path / 'out'}").dataset) == 12


def test_validate_reports_what_the_command_prints(tmp_path):
    broken = generate_broken_lines(8, seed=9)
    src = tmp_path / "v.jsonl"
    src.write_text("\n".join([json.dumps(CHAT)] + [line for line, _ in broken]) + "\n", encoding="utf-8")
    seen = []
    found = sftdata.validate(str(src), max_listed=3, on_invalid=seen.append)
    assert (found.records, found.invalid_total, found.ok) == (9, 8, False)
    assert len(found.invalid) == 3 and seen == found.invalid
    assert sum(found.reasons.values()) == 8
    assert sftdata.validate([str(src)], max_listed=0).invalid == []


def test_options_name_every_pipeline_setting():
    """``sftdata.Options`` (the typed keywords) lists what a pipeline can set, no more, no less."""
    from sftdata.config import _STAGE_OF

    assert set(sftdata.Options.__annotations__) == set(_STAGE_OF) | {"name", "fields"}
