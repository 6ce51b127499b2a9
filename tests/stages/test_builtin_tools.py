"""Built-in tools and tool placement as settings: the record schema, the semantic rules with their
reason codes, the pipeline settings and the `--tools-in-system` flag, end to end with the audit."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from sftdata.cli import main
from sftdata.config import ConfigError, settings_from_dict
from sftdata.process.record import conversation_hashes
from sftdata.stages.encode import PieceEncoder
from sftdata.stages.records import Reject
from sftdata.stages.render import Llama3Renderer, official_template_text
from sftdata.stages.validate import check_schema, plainly_valid, record_schema, to_conversation
from tests.conftest import write_jsonl
from tests.synth_agentic import generate_agentic_records

DATE = "26 Jul 2024"
SEARCH = {"type": "function", "function": {"name": "brave_search", "arguments": {"query": "Lisbon"}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                            "parameters": {"type": "object", "properties": {}}}}


def record(call: dict | None = None, **extra) -> dict:
    msgs = [{"role": "user", "content": "Weather in Lisbon?"}]
    if call is not None:
        msgs += [{"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "ipython", "content": "22 C"}]
    return {"messages": [*msgs, {"role": "assistant", "content": "Sunny, 22 C."}], **extra}


def conv(rec: dict, template: str = "llama3.1", **kw):
    check_schema(rec)
    return to_conversation(rec, source="t", line=1, template=template, **kw)


def rejection(rec: dict, template: str = "llama3.1", **kw) -> Reject:
    with pytest.raises(Reject) as info:
        conv(rec, template, **kw)
    return info.value


def text(tokenizer, c, template="llama3.1", tiu=True) -> str:
    pieces = Llama3Renderer(template, DATE, tools_in_user_message=tiu).render(c)
    return tokenizer.decode(PieceEncoder(tokenizer, 1 << 16).encode(pieces).input_ids.tolist())


@pytest.mark.parametrize("value,ok", [
    (["brave_search", "code_interpreter"], True), ([], True), (None, True), (["photo_gen"], True),
    (["brave search"], False), (["brave_search\n"], False), (["9lives"], False), ([""], False), (["a", "a"], False), ("brave_search", False),
    ([1], False), ({"brave_search": True}, False),
])
def test_schema_and_fast_path_agree_on_builtin_tools(value, ok):
    rec = record(builtin_tools=value)
    assert Draft202012Validator(record_schema()).is_valid(rec) is ok
    assert not plainly_valid(rec) or ok  # the fast path never accepts what the schema refuses
    if ok:
        check_schema(rec)
    else:
        with pytest.raises(Reject):
            check_schema(rec)


def test_custom_tools_is_another_name_for_tools(tokenizer):
    a, b = conv(record(tools=[WEATHER])), conv(record(custom_tools=[WEATHER]))
    assert a.tools == b.tools == [WEATHER] and text(tokenizer, a) == text(tokenizer, b)
    assert conv(record(tools=[WEATHER], custom_tools=[WEATHER])).tools == [WEATHER]
    other = dict(WEATHER, function=dict(WEATHER["function"], name="other"))
    r = rejection(record(tools=[WEATHER], custom_tools=[other]))
    assert r.reason == "conflicting_tools" and r.pointer == "/custom_tools"
    assert not plainly_valid(record(custom_tools=[{"type": "function"}]))
    with pytest.raises(Reject):
        check_schema(record(custom_tools=[{"type": "function"}]))


def test_builtin_call_arguments_must_be_strings(hf_reference):
    call = {"type": "function", "function": {"name": "brave_search", "arguments": {"query": "x", "count": 3}}}
    r = rejection(record(call, builtin_tools=["brave_search"]))
    assert r.reason == "builtin_call_arguments" and r.pointer == "/messages/1/tool_calls/0/function/arguments/count"
    with pytest.raises(TypeError, match="concatenate"):  # the official template cannot render it either
        hf_reference.apply_chat_template(record(call)["messages"], builtin_tools=["brave_search"], tokenize=False,
                                         chat_template=official_template_text("llama3.1"))
    assert conv(record(call)).messages[1].tool_call.arguments["count"] == 3  # not built-in: JSON, any type


@pytest.mark.parametrize("template,key,pointer", [
    ("llama3", "builtin_tools", "/builtin_tools"), ("llama3.2", "builtin_tools", "/builtin_tools"),
    ("llama3", "custom_tools", "/custom_tools"),
])
def test_templates_that_cannot_render_a_request_reject_it(template, key, pointer):
    value = ["brave_search"] if key == "builtin_tools" else [WEATHER]
    r = rejection(record(**{key: value}), template)
    assert r.reason == "template_unsupported" and r.pointer == pointer and template in r.message
    assert conv(record(builtin_tools=[]), template).builtin_tools == ()  # asking for none is fine anywhere


def test_record_builtin_tools_beat_the_pipeline(tokenizer):
    default = ("brave_search", "wolfram_alpha")
    inherited = conv(record(SEARCH), builtin_default=default)
    assert inherited.builtin_tools == default
    assert "Tools: brave_search, wolfram_alpha\n\n" in text(tokenizer, inherited)
    assert '<|python_tag|>brave_search.call(query="Lisbon")<|eom_id|>' in text(tokenizer, inherited)
    own = conv(record(SEARCH, builtin_tools=["code_interpreter"]), builtin_default=default)
    assert own.builtin_tools == ("code_interpreter",)
    rendered = text(tokenizer, own)  # brave_search is not built-in here: a JSON call, still closed by eom
    assert "Environment: ipython\nTools: \n\n" in rendered and '{"name": "brave_search"' in rendered
    assert "<|python_tag|>" not in rendered and rendered.count("<|eom_id|>") == 1
    off = conv(record(SEARCH, builtin_tools=[]), builtin_default=default)
    assert off.builtin_tools == () and "<|eom_id|>" not in text(tokenizer, off)
    assert "Environment" not in text(tokenizer, off)
    r = rejection(record(SEARCH), "llama3.2", builtin_default=default)
    assert r.reason == "template_unsupported" and "render.builtin_tools" in r.message


def test_tools_in_the_system_message_need_no_first_user_message(tokenizer):
    rec = {"tools": [WEATHER], "messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "assistant", "content": "Hello."}]}
    assert rejection(rec).reason == "tools_without_user"
    c = conv(rec, tools_in_user_message=False)
    rendered = text(tokenizer, c, tiu=False)
    system = rendered.split("<|eot_id|>")[0]
    assert "You have access to the following functions" in system and system.endswith('}\n\nBe brief.')


def test_special_text_in_call_arguments_is_counted_and_hashes_see_builtin_tools():
    code = {"type": "function", "function": {"name": "code_interpreter", "arguments": {"code": "print('<|eot_id|>')"}}}
    assert conv(record(code, builtin_tools=["code_interpreter"])).has_special_text
    assert not conv(record(SEARCH, builtin_tools=["brave_search"])).has_special_text
    plain, builtin = conv(record(SEARCH)), conv(record(SEARCH, builtin_tools=["brave_search"]))
    assert conversation_hashes(plain) != conversation_hashes(builtin)
    assert conversation_hashes(plain) == conversation_hashes(conv(record(SEARCH, builtin_tools=[])))


@pytest.mark.parametrize("render,words", [
    ({"template": "llama3.2", "builtin_tools": ["brave_search"]}, "llama3.2 template has no built-in tools"),
    ({"template": "llama3", "builtin_tools": ["brave_search"]}, "llama3 template renders no tools"),
    ({"template": "llama3", "tools_in_user_message": False}, "tools_in_user_message"),
    ({"template": "llama3.1", "builtin_tools": ["brave search"]}, "builtin_tools"),
    ({"template": "llama3.1", "tools_in_user_message": "no"}, "tools_in_user_message"),
])
def test_pipeline_refuses_render_settings_its_template_cannot_honour(render, words):
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"stages": {"render": render}})
    assert words in str(info.value)


def test_pipeline_settings_and_flag_reach_the_rows(tmp_path, tokenizer):
    import pyarrow as pa

    records = generate_agentic_records(40, seed=3)
    src = write_jsonl(tmp_path / "agentic.jsonl", records)
    yaml = tmp_path / "p.yaml"
    yaml.write_text("stages:\n  render:\n    template: llama3.3\n    builtin_tools: [brave_search, wolfram_alpha]\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(yaml), "--input", str(src), "--output", str(out), "--workers", "1",
                                    "--tools-in-system"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "audit.json").read_text())  # the audit ran after the run, and passed
    assert report["ok"] and report["stats"]["rows"] == 40
    # --source re-renders the records with the settings the manifest recorded, knobs included
    again = CliRunner().invoke(main, ["audit", str(out), "--source", str(src), "--json", str(tmp_path / "a.json")])
    assert again.exit_code == 0, again.output
    rules = {r["name"]: r["status"] for r in json.loads((tmp_path / "a.json").read_text())["rules"]}
    assert rules["source_match"] == "pass"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pipeline"]["template"] == "llama3.3" and manifest["pipeline"]["tools_in_user_message"] is False
    assert manifest["pipeline"]["builtin_tools"] == ["brave_search", "wolfram_alpha"]
    assert manifest["counts"]["records_read"] == 40 == manifest["totals"]["rows"]
    rows = []
    for shard in manifest["shards"]:
        with pa.memory_map(str(out / shard["file"])) as f:
            rows += pa.ipc.open_stream(f).read_all().to_pylist()
    settings = settings_from_dict({"stages": {"render": {"template": "llama3.3", "tools_in_user_message": False,
                                                         "builtin_tools": ["brave_search", "wolfram_alpha"]}}})
    renderer, encoder = Llama3Renderer.for_settings(settings), PieceEncoder(tokenizer, 1 << 20)
    by_id = {r["id"]: r for r in records}
    for row in rows:
        c = to_conversation(by_id[row["id"]], source="t", line=1, template="llama3.3",
                            builtin_default=tuple(settings.builtin_tools), tools_in_user_message=False)
        enc = encoder.encode(renderer.render(c))
        assert row["input_ids"] == enc.input_ids.tolist() and row["labels"] == enc.labels.tolist()
    system = [tokenizer.decode(r["input_ids"]).split("<|eot_id|>")[0] for r in rows]
    assert sum("You have access to the following functions" in s for s in system) > 10
    assert sum("Tools: " in s for s in system) == 40 - sum(r.get("builtin_tools") == [] for r in records)


def test_shipped_llama3_3_pipeline():
    from pathlib import Path

    from sftdata.config import load_pipeline

    s = load_pipeline(Path(__file__).resolve().parents[2] / "pipelines" / "llama3.3.yaml")
    assert (s.template, s.builtin_tools, s.tools_in_user_message) == ("llama3.3", [], True)
    flagged = load_pipeline(Path(__file__).resolve().parents[2] / "pipelines" / "llama3.3.yaml",
                            {"tools_in_user_message": False, "builtin_tools": ["brave_search"]})
    assert (flagged.tools_in_user_message, flagged.builtin_tools) == (False, ["brave_search"])


def test_validate_command_applies_the_template_rules(tmp_path):
    records = generate_agentic_records(30, seed=4)
    src = write_jsonl(tmp_path / "agentic.jsonl", records)
    ok = CliRunner().invoke(main, ["validate", "--template", "llama3.3", str(src)])
    assert ok.exit_code == 0, ok.output
    refused = CliRunner().invoke(main, ["validate", "--template", "llama3.2", str(src)])
    asking = [i for i, r in enumerate(records, 1) if r.get("builtin_tools")]
    assert refused.exit_code == 1 and asking
    lines = [ln for ln in refused.output.splitlines() if "[template_unsupported]" in ln]
    assert [int(ln.split(":")[1].split()[0]) for ln in lines] == asking


def test_trl_compat_collator_stops_at_eom_like_the_pipeline(tokenizer):
    """The old-TRL-guide collator with Llama-3 headers: a call turn ends at its <|eom_id|>; the
    ipython result after it stays untrained, exactly as in the pipeline's labels."""
    pytest.importorskip("torch")
    from sftdata.integrations.trl_collator import LLAMA3_INSTRUCTION, LLAMA3_RESPONSE, DataCollatorForCompletionOnlyLM

    renderer, encoder = Llama3Renderer("llama3.1", DATE), PieceEncoder(tokenizer, 1 << 20)
    collator = DataCollatorForCompletionOnlyLM(LLAMA3_RESPONSE, LLAMA3_INSTRUCTION, tokenizer=tokenizer.hf)
    eom_rows = 0
    for rec in generate_agentic_records(40, seed=8):
        for m in rec["messages"]:
            m.pop("weight", None)  # a collator cannot know weights
        c = to_conversation(rec, source="t", line=1, template="llama3.1", builtin_default=("brave_search",))
        enc = encoder.encode(renderer.render(c))
        ids, labels = enc.input_ids.tolist(), enc.labels.tolist()
        assert collator.labels_for(ids) == labels, rec["id"]
        eom_rows += tokenizer.eom_id in ids
    assert eom_rows > 20
