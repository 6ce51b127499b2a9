"""Regressions from review: records that once crashed a run now land in the quarantine."""

from __future__ import annotations

import json

import pytest
import zstandard

from sftdata.config import ConfigError, settings_from_dict
from sftdata.runner import RunError, run_pipeline
from tests.conftest import run_committed, settings, write_jsonl
from tests.synth import generate_records


def call(args: str) -> dict:
    return {"tools": [{"type": "function", "function": {"name": "f"}}], "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
            "name": "f", "arguments": args}}]},
        {"role": "tool", "content": "{}"}, {"role": "assistant", "content": "ok"}]}


@pytest.mark.parametrize("record,reason", [
    (call('{"a": "\\ud800"}'), "lone_surrogate"),
    (call("[" * 100_000), "too_deep"),
    (call("{not json"), "invalid_tool_arguments"),
])
def test_nested_json_in_arguments(tmp_path, record, reason):
    good = generate_records(3, seed=71)
    src = write_jsonl(tmp_path / "a.jsonl", [good[0], record, *good[1:]])
    m = run_pipeline(settings(), [str(src)], tmp_path / "o").manifest
    assert m["counts"]["rejected"] == {reason: 1} and m["counts"]["records_written"] == 3


def test_sharegpt_speaker_of_wrong_type(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": ["x"], "value": "v"}]},
                                             {"conversations": [{"from": "human", "value": "q"},
                                                                {"from": "gpt", "value": "a"}]}])
    m = run_pipeline(settings(input_format="sharegpt"), [str(src)], tmp_path / "o").manifest
    assert m["counts"]["rejected"] == {"unknown_role": 1} and m["counts"]["records_written"] == 1


def test_corrupt_zstd_is_quarantined(tmp_path):
    data = zstandard.ZstdCompressor().compress(
        "".join(json.dumps(r) + "\n" for r in generate_records(50, seed=72)).encode())
    (tmp_path / "c.jsonl.zst").write_bytes(data[: len(data) // 2] + b"garbage" * 10)
    m = run_committed(settings(), [str(tmp_path / "c.jsonl.zst")], tmp_path / "o")
    assert m["counts"]["rejected"].get("corrupt_input") == 1


def test_one_bad_element_does_not_lose_a_json_array(tmp_path):
    good = generate_records(3, seed=73)
    text = json.dumps(good[:2] + [{"messages": [{"role": "user", "content": "PLACEHOLDER"}]}] + good[2:])
    (tmp_path / "a.json").write_text(text.replace('"PLACEHOLDER"', '"\\ud800"'))
    m = run_pipeline(settings(), [str(tmp_path / "a.json")], tmp_path / "o").manifest
    assert m["counts"]["records_read"] == 4 and m["counts"]["records_written"] == 3
    assert m["counts"]["rejected"] == {"lone_surrogate": 1}


def test_integers_beyond_64_bits_render_exactly(tmp_path, tokenizer):
    rec = call('{"n": 123456789012345678901234567890}')
    src = write_jsonl(tmp_path / "a.jsonl", [rec])
    run_pipeline(settings(), [str(src)], tmp_path / "o")
    import datasets

    row = datasets.load_from_disk(str(tmp_path / "o"))[0]
    assert "123456789012345678901234567890" in tokenizer.decode(row["input_ids"])


def test_resume_on_a_finished_folder_checks_inputs_and_settings(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", generate_records(5, seed=74))
    b = write_jsonl(tmp_path / "b.jsonl", generate_records(3, seed=75))
    run_pipeline(settings(), [str(a)], tmp_path / "o")
    assert run_pipeline(settings(), [str(a)], tmp_path / "o", resume=True).manifest["counts"]["records_read"] == 5
    with pytest.raises(RunError, match="other inputs|other settings"):
        run_pipeline(settings(), [str(b)], tmp_path / "o", resume=True)
    with pytest.raises(RunError, match="other inputs|other settings"):
        run_pipeline(settings(max_length=100), [str(a)], tmp_path / "o", resume=True)


def test_flags_obey_the_pipeline_schema():
    with pytest.raises(ConfigError) as info:
        settings_from_dict({}, overrides={"max_length": -5, "date_string": "yesterday"})
    assert len(info.value.errors) == 2


def test_repeated_ids_are_reported_and_kept(tmp_path):
    recs = generate_records(4, seed=76)
    recs[2]["id"] = recs[0]["id"]
    src = write_jsonl(tmp_path / "a.jsonl", recs)
    m = run_pipeline(settings(), [str(src)], tmp_path / "o").manifest
    listed = [json.loads(x)["id"] for x in (tmp_path / "o" / "repeated_ids.jsonl").read_bytes().splitlines()]
    assert listed == [recs[0]["id"]] and m["counts"]["repeated_ids"] == 1 and m["counts"]["records_written"] == 4


def test_quarantine_keeps_the_whole_original(tmp_path):
    long_bad = '{"messages": [{"role": "user", "content": "' + "x" * 20_000 + '"}]}'
    src = write_jsonl(tmp_path / "a.jsonl", [long_bad])
    run_committed(settings(), [str(src)], tmp_path / "o")
    q = json.loads((tmp_path / "o" / "quarantine.jsonl").read_text())
    assert q["original"] == long_bad and q["reason"] == "no_assistant"


def test_schemas_ship_inside_the_package():
    from importlib import resources

    for name in ("record.schema.json", "pipeline.schema.json", "audit-report.schema.json"):
        assert resources.files("sftdata").joinpath("schemas", name).is_file()
