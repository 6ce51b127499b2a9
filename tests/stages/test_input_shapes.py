"""Files as other projects ship them (issue 16): what a new user runs first works, or says why.

Every input is generated here in the shape of a public file: ShareGPT exports, Alpaca variants
(``output`` or ``response``), a pretty-printed single ``.json`` object, ``.json.gz`` arrays,
OpenAI-style tool-calling records.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest
import zstandard
from click.testing import CliRunner

from sftdata.cli import main
from sftdata.config import load_pipeline
from tests.conftest import run_committed, settings, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def chats(n: int) -> list[dict]:
    return [{"id": f"c{i}", "messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                         {"role": "assistant", "content": f"{i} + {i} = {2 * i}."}]}
            for i in range(n)]


def sharegpt(n: int) -> list[dict]:
    return [{"id": c["id"], "conversations": [{"from": "human", "value": c["messages"][0]["content"]},
                                              {"from": "gpt", "value": c["messages"][1]["content"]}]}
            for c in chats(n)]


def alpaca_response(n: int) -> list[dict]:
    return [{"id": c["id"], "instruction": c["messages"][0]["content"], "input": "",
             "response": c["messages"][1]["content"]} for c in chats(n)]


def rows(out: Path) -> list[tuple]:
    import datasets

    ds = datasets.load_from_disk(str(out))
    return list(zip(ds["id"], ds["input_ids"], ds["labels"], strict=True))


def quarantine(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    run_committed(settings(), [str(write_jsonl(d / "m.jsonl", chats(6)))], d / "out")
    return rows(d / "out")


@pytest.mark.parametrize("name", ["llama3.yaml", "llama3.1.yaml", "llama3.2.yaml", "demo.yaml"])
def test_shipped_pipelines_detect_the_format_and_flags_win(name):
    assert load_pipeline(ROOT / "pipelines" / name).input_format == "auto"
    assert load_pipeline(ROOT / "pipelines" / name, {"input_format": "sharegpt"}).input_format == "sharegpt"


def test_quick_start_pipeline_reads_sharegpt(tmp_path, reference):
    src = write_jsonl(tmp_path / "share.jsonl", sharegpt(6))
    res = cli("run", str(ROOT / "pipelines" / "llama3.2.yaml"), "-i", str(src), "-o", str(tmp_path / "o"),
              "--workers", "1", "--no-audit")
    assert res.exit_code == 0, res.output
    assert "share.jsonl: sharegpt (detected)" in res.output
    assert rows(tmp_path / "o") == reference


def test_summary_names_the_format_and_the_flag(tmp_path):
    src = write_jsonl(tmp_path / "share.jsonl", sharegpt(4))
    res = cli("run", "-i", str(src), "-o", str(tmp_path / "o"), "--input-format", "messages", "--no-audit")
    assert "missing_field" in res.output
    assert "share.jsonl: records look like sharegpt, read as messages; pass --input-format sharegpt" in res.output


def test_unknown_format_names_the_keys_it_saw(tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer_text": "a"}] * 3)
    res = cli("run", "-i", str(src), "-o", str(tmp_path / "o"), "--input-format", "auto", "--no-audit")
    assert "(detected)" not in res.output
    assert "qa.jsonl: unknown format (keys seen: 'answer_text', 'question'), read as messages" in res.output
    assert "--field NAME=SOURCE" in res.output


def test_alpaca_response_variant_is_detected_and_read(tmp_path, reference):
    src = write_jsonl(tmp_path / "alp.jsonl", alpaca_response(6))
    m = run_committed(settings(input_format="auto"), [str(src)], tmp_path / "o")
    assert m["inputs"][0]["format"] == "alpaca"
    assert rows(tmp_path / "o") == reference


def test_field_flag_maps_names_for_run_and_detection(tmp_path, reference):
    recs = [{"id": r["id"], "instruction": r["instruction"], "answer": r["response"]} for r in alpaca_response(6)]
    src = write_jsonl(tmp_path / "alp.jsonl", recs)
    res = cli("run", "-i", str(src), "-o", str(tmp_path / "o"), "--input-format", "auto", "--field",
              "output=answer", "--no-audit")
    assert res.exit_code == 0, res.output
    assert "alp.jsonl: alpaca (detected)" in res.output
    assert rows(tmp_path / "o") == reference
    bad = cli("run", "-i", str(src), "-o", str(tmp_path / "o2"), "--field", "answer")
    assert bad.exit_code == 2 and "NAME=SOURCE" in bad.output


def test_validate_takes_the_reading_options_of_run(tmp_path):
    src = write_jsonl(tmp_path / "share.jsonl", sharegpt(3))
    first = cli("validate", str(src))
    assert first.exit_code == 1
    assert "share.jsonl: records look like sharegpt, read as messages; pass --input-format sharegpt" in first.output
    res = cli("validate", "--input-format", "sharegpt", str(src))
    assert res.exit_code == 0, res.output
    assert "3 records checked, 3 valid, 0 invalid" in res.output
    renamed = write_jsonl(tmp_path / "r.jsonl", [{"turns": c["conversations"]} for c in sharegpt(2)])
    res = cli("validate", "--input-format", "auto", "--field", "conversations=turns", str(renamed))
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("suffix", [".json.gz", ".json.zst", ".json"])
def test_json_arrays_compressed_or_not_are_arrays(tmp_path, reference, suffix):
    body = json.dumps(chats(6), indent=2).encode()
    data = {".json.gz": gzip.compress, ".json.zst": zstandard.ZstdCompressor().compress}.get(suffix, bytes)(body)
    src = tmp_path / f"chats{suffix}"
    src.write_bytes(data)
    m = run_committed(settings(), [str(src)], tmp_path / "o")
    assert m["counts"]["records_read"] == 6 and m["counts"]["rejected"] == {}
    assert rows(tmp_path / "o") == reference


def test_a_pretty_printed_json_object_is_one_record(tmp_path):
    rec = chats(1)[0]
    del rec["id"]
    src = tmp_path / "case.json"
    src.write_text(json.dumps(rec, indent=4))
    m = run_committed(settings(), [str(src)], tmp_path / "o")
    assert m["counts"]["records_read"] == 1 and m["counts"]["records_written"] == 1
    assert rows(tmp_path / "o")[0][0] == "case.json:1"


def test_json_lines_under_a_json_name_stay_lines(tmp_path):
    src = write_jsonl(tmp_path / "export.json", chats(4))
    m = run_committed(settings(), [str(src)], tmp_path / "o")
    assert m["counts"]["records_read"] == 4 and m["counts"]["records_written"] == 4


def test_array_row_ids_are_element_indices_and_quarantine_ids_are_never_null(tmp_path):
    recs = chats(3)
    for r in recs:
        del r["id"]
    recs[1]["messages"][0]["role"] = "bot"
    src = tmp_path / "arr.json"
    src.write_text(json.dumps(recs))
    run_committed(settings(), [str(src)], tmp_path / "o")
    assert [r[0] for r in rows(tmp_path / "o")] == ["arr.json:1", "arr.json:3"]
    (q,) = quarantine(tmp_path / "o")
    assert q["id"] == "arr.json:2" and q["line"] == 2
    lines = write_jsonl(tmp_path / "l.jsonl", ["not json", {"messages": []}])
    run_committed(settings(), [str(lines)], tmp_path / "o2")
    assert [q["id"] for q in quarantine(tmp_path / "o2")] == ["l.jsonl:1", "l.jsonl:2"]
    doc = (ROOT / "docs" / "output-format.md").read_text()
    assert "element index" in doc


def test_empty_assistant_turn_with_weight_0_is_kept_untrained_as_the_official_template(tmp_path, tokenizer,
                                                                                     hf_reference):
    from tests.stages.test_parity import reference_ids

    rec = {"id": "w0", "messages": [{"role": "user", "content": "Draft?"},
                                    {"role": "assistant", "content": "", "weight": 0},
                                    {"role": "user", "content": "Now answer."},
                                    {"role": "assistant", "content": "Answer."}]}
    src = write_jsonl(tmp_path / "w.jsonl", [rec])
    for template in ("llama3", "llama3.1", "llama3.2"):
        out = tmp_path / f"o-{template}"
        m = run_committed(settings(template=template), [str(src)], out)
        assert m["counts"]["rejected"] == {}, m["counts"]
        ((_, ids, labels),) = rows(out)
        assert ids == reference_ids(hf_reference, rec, template)
        assert [t for t, lab in zip(ids, labels, strict=True) if lab != -100] == \
            tokenizer.encode_text("Answer.") + [tokenizer.eot_id]


def test_empty_trained_assistant_turn_is_still_rejected(tmp_path):
    rec = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}
    m = run_committed(settings(), [str(write_jsonl(tmp_path / "e.jsonl", [rec]))], tmp_path / "o")
    assert m["counts"]["rejected"] == {"empty_assistant": 1}


def tool_record_with_four_problems() -> dict:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    return {"id": "tool-1", "tools": tools, "messages": [
        {"role": "system", "content": "You can call tools."},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [call]},
        {"role": "tool", "content": "{\"temp\": 21}"},
        {"role": "assistant", "content": None, "tool_calls": [call, call]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{city: Paris}"}}]},
    ]}


def test_every_problem_of_a_record_in_one_quarantine_line(tmp_path):
    src = write_jsonl(tmp_path / "t.jsonl", [tool_record_with_four_problems()])
    m = run_committed(settings(), [str(src)], tmp_path / "o")
    assert m["counts"]["rejected"] == {"content_with_tool_calls": 1}
    (q,) = quarantine(tmp_path / "o")
    assert q["reason"] == "content_with_tool_calls" and q["message"] == q["problems"][0]["message"]
    assert [(p["reason"], p["pointer"]) for p in q["problems"]] == [
        ("content_with_tool_calls", "/messages/1/content"),
        ("multiple_tool_calls", "/messages/3/tool_calls"),
        ("invalid_tool_arguments", "/messages/4/tool_calls/0/function/arguments"),
        ("tools_without_user", "/messages"),
    ]
    res = cli("validate", "--template", "llama3.1", str(src))
    assert res.output.count("tool-1") == 4, res.output


def test_every_schema_problem_at_once(tmp_path):
    rec = {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": 3}]}
    src = write_jsonl(tmp_path / "s.jsonl", [rec])
    run_committed(settings(), [str(src)], tmp_path / "o")
    (q,) = quarantine(tmp_path / "o")
    assert {(p["reason"], p["pointer"]) for p in q["problems"]} == {
        ("unknown_role", "/messages/0/role"), ("wrong_type", "/messages/1/content")}
    assert orjson.loads(orjson.dumps(q))["reason"] == q["problems"][0]["reason"]


def test_problems_of_a_hostile_record_are_bounded():
    from sftdata.process.record import RecordProcessor
    from sftdata.stages.records import MAX_PROBLEMS, Reject

    proc = RecordProcessor(settings())
    call = {"function": {"name": "f", "arguments": {}}}
    for rec in ({"messages": [{"role": "assistant", "content": None, "tool_calls": [call, call]}] * 500},
                {"messages": [{"role": "bot", "content": 1}] * 500}):
        with pytest.raises(Reject) as exc:
            proc.conversation(rec, "h.jsonl", 1)
        assert len(exc.value.problems) == MAX_PROBLEMS + 1
        assert exc.value.problems[-1]["reason"] == "more_problems"
        assert exc.value.reason == exc.value.problems[0]["reason"]


def test_prompt_completion_reports_every_problem_pointing_at_prompt_or_completion(tmp_path):
    ok = {"id": "p1", "prompt": [{"role": "user", "content": "Q?"}],
          "completion": [{"role": "assistant", "content": "Done."}]}
    bad = {"id": "p2", "prompt": [{"role": "bot", "content": "x"}],
           "completion": [{"role": "assistant", "content": 5}]}
    src = write_jsonl(tmp_path / "pc.jsonl", [ok, bad])
    m = run_committed(settings(input_format="prompt_completion"), [str(src)], tmp_path / "o")
    assert m["counts"]["records_written"] == 1
    (q,) = quarantine(tmp_path / "o")
    assert {p["pointer"] for p in q["problems"]} == {"/prompt/0/role", "/completion/0/content"}
