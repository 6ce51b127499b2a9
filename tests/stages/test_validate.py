"""Validation: the compiled validator agrees with `jsonschema`; every broken shape gets its reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from sftdata.stages.records import Reject
from sftdata.stages.validate import (
    _fast_validator,
    check_schema,
    parse_json,
    plainly_valid,
    record_schema,
    to_conversation,
)
from tests.synth import generate_broken_lines, generate_records

REFERENCE = Draft202012Validator(record_schema())


def fast_ok(obj) -> bool:
    try:
        _fast_validator()(obj)
        return True
    except Exception:
        return False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5) | st.sampled_from(
        ["user", "assistant", "system", "tool", "ipython", "bot", "function", "text", "image_url"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["messages", "role", "content", "tool_calls", "function", "name", "arguments", "type",
                         "weight", "tools", "id", "text", "value", "parameters"]), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_compiled_validator_equals_jsonschema_on_arbitrary_values(obj):
    assert fast_ok(obj) == REFERENCE.is_valid(obj)


message_like = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "ipython", "bot", 1, None, ["user"]])},
    optional={"content": json_values, "tool_calls": json_values, "weight": st.sampled_from([0, 1, 2, True, 1.0, None]),
              "name": json_values, "tool_call_id": json_values})
record_like = st.fixed_dictionaries(
    {"messages": st.lists(message_like | json_values, max_size=3) | json_values},
    optional={"id": st.sampled_from(["a", 7, True, None, 1.5, ["x"]]), "tools": json_values})


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_like | json_values)
def test_plain_fast_path_never_accepts_what_jsonschema_rejects(obj):
    """The hand-written fast path is one-sided: whatever it accepts, the schema accepts."""
    if isinstance(obj, dict) and plainly_valid(obj):
        assert REFERENCE.is_valid(obj), obj


def test_plain_fast_path_takes_real_records():
    """It is worth having only if ordinary records take it: every generated record does."""
    records = generate_records(300, seed=3)
    assert all(plainly_valid(r) for r in records)


def test_compiled_validator_equals_jsonschema_on_records_and_mutations():
    records = generate_records(300, seed=3)
    for rec in records:
        assert fast_ok(rec) and REFERENCE.is_valid(rec)
    mutated = 0
    for rec in records:
        for mutate in (lambda r: r["messages"][0].__setitem__("role", "bot"),
                       lambda r: r["messages"][-1].__setitem__("content", 7),
                       lambda r: r["messages"][0].__setitem__("weight", 2),
                       lambda r: r.__setitem__("messages", {}),
                       lambda r: r["messages"][0].pop("role")):
            r = json.loads(json.dumps(rec))
            mutate(r)
            assert fast_ok(r) == REFERENCE.is_valid(r) is False
            assert not plainly_valid(r)
            mutated += 1
    assert mutated == 1500


@pytest.mark.parametrize("template", ["llama3.1", "llama3.2"])
def test_every_broken_line_gets_its_expected_reason(template):
    lines = generate_broken_lines(200, seed=9)
    assert len({reason for _, reason in lines}) >= 8
    for line, expected in lines:
        with pytest.raises(Reject) as info:
            obj = parse_json(line.encode("utf-8", "surrogatepass"))
            check_schema(obj)
            to_conversation(obj, source="x", line=1, template=template)
        got = info.value.reason
        if expected == "schema":
            assert got in ("schema", "wrong_type", "missing_field", "unknown_role"), (line, got)
        else:
            assert got == expected, (line, got)


@pytest.mark.parametrize("raw,reason", [
    (b'{"messages": [', "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b"42", "not_an_object"),
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "lone_surrogate"),
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "invalid_utf8"),
    (b'{"messages": [{"role": "user", "content": "a\x00b"}]}', "invalid_json"),
    (b"[" * 100000 + b"]" * 100000, "too_deep"),
    (b'{"messages": [{"role": "user", "content": NaN}]}', "invalid_json"),
])
def test_parse_failures_have_reasons(raw, reason):
    with pytest.raises(Reject) as info:
        obj = parse_json(raw)
        check_schema(obj)
    assert info.value.reason == reason


def msg(role, content, **kw):
    return {"role": role, "content": content, **kw}


@pytest.mark.parametrize("record,reason", [
    ({"messages": [msg("user", "hi")]}, "no_assistant"),
    ({"messages": [msg("user", "hi"), msg("assistant", "x", weight=0)]}, "no_trainable_turn"),
    ({"messages": [msg("user", "hi"), msg("assistant", "  \n ")]}, "empty_assistant"),
    ({"messages": [msg("user", None), msg("assistant", "x")]}, "missing_content"),
    ({"messages": [msg("user", "hi"), {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "a", "arguments": {}}}] * 2}]}, "multiple_tool_calls"),
    ({"messages": [msg("user", "hi"), {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "a", "arguments": "{not json"}}]}]}, "invalid_tool_arguments"),
    ({"messages": [msg("user", "hi"), {"role": "assistant", "content": "I will call", "tool_calls": [
        {"type": "function", "function": {"name": "a", "arguments": {}}}]}]}, "content_with_tool_calls"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}],
      "messages": [msg("assistant", "x")]}, "tools_without_user"),
    ({"messages": [msg("user", [{"type": "image_url", "image_url": {"url": "x"}}]), msg("assistant", "x")]},
     "unsupported_part"),
])
def test_semantic_rules(record, reason):
    with pytest.raises(Reject) as info:
        check_schema(record)
        to_conversation(record, source="x", line=1, template="llama3.2")
    assert info.value.reason == reason


def test_string_arguments_are_parsed_and_ipython_is_a_tool_role():
    rec = {"tools": [{"type": "function", "function": {"name": "f"}}], "messages": [
        msg("user", "q"),
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
            "name": "f", "arguments": '{"a": 1}'}}]},
        msg("ipython", '{"r": 2}'), msg("assistant", "done")]}
    check_schema(rec)
    conv = to_conversation(rec, source="x", line=1, template="llama3.1")
    assert conv.messages[1].tool_call.arguments == {"a": 1}
    assert conv.messages[2].role == "tool"
    with pytest.raises(Reject) as info:
        to_conversation(rec, source="x", line=1, template="llama3")
    assert info.value.reason == "template_unsupported"
