"""No key is lost (issue 32): every key of every record, and of each of its messages, is rendered
(read by the format's adapter), converted, counted per name, or the reason the record is rejected."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.config import settings_from_dict
from sftdata.process.record import RecordProcessor
from sftdata.stages.adapt import ADAPTERS, adapt
from sftdata.stages.adapt.keys import (
    CALL_KEYS,
    OTHER,
    REASONING_KEYS,
    RECORD_MEANING,
    TURN_MEANING,
    count_names,
    empty,
    top_names,
)
from sftdata.stages.records import Conversation, Reject
from tests.synth import generate_records

MEANING_REASONS = {"reasoning_not_rendered", "unmapped_tool_calls", "unmapped_tools"}
SPEC = ADAPTERS["messages"].keys


def _proc(strict: bool = False, template: str = "llama3.1") -> RecordProcessor:
    return RecordProcessor(settings_from_dict({"stages": {"render": {"template": template},
                                                          "validate": {"strict_keys": strict}}}))


def outcome(obj, proc: RecordProcessor, fmt: str = "messages") -> Conversation | Reject:
    try:
        return adapt(copy.deepcopy(obj), fmt, proc.settings, proc.renderer, "t.jsonl", 1)
    except Reject as r:
        return r


def assert_every_key_accounted(rec: dict, result: Conversation | Reject) -> None:
    """Each key of the record and of its messages: read by the adapter, counted by name, or the
    record is rejected (and then a meaning key rejects it with its own reason, or another rule)."""
    if isinstance(result, Reject):
        return  # the record is in quarantine whole, with its reason: nothing of it is lost
    counted = set(result.unknown_keys)
    for key in rec:
        assert key in SPEC.record or f"/{key[:64]}" in counted, key
    for m in rec["messages"]:
        for key in m:
            assert key in SPEC.turn or f"/messages/*/{key[:64]}" in counted, key


def _corpus(shared_corpus=None) -> list[dict]:
    return generate_records(150, seed=5, tools=True) + list(shared_corpus or [])


def test_extra_keys_are_counted_and_change_no_token(tokenizer):
    proc = _proc()
    rec = {"id": "a", "source": "web", "messages": [{"role": "user", "content": "hi", "annotation": {"x": 1}},
                                                    {"role": "assistant", "content": "ho", "refusal": None}]}
    conv = outcome(rec, proc)
    assert isinstance(conv, Conversation)
    assert conv.unknown_keys == ("/source", "/messages/*/annotation", "/messages/*/refusal")
    bare = {"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]}
    assert proc.encode(conv).input_ids.tolist() == proc.encode(outcome(bare, proc)).input_ids.tolist()


@pytest.mark.parametrize("key,reason", [("reasoning_content", "reasoning_not_rendered"),
                                        ("thinking", "reasoning_not_rendered"),
                                        ("tool_call", "unmapped_tool_calls"),
                                        ("function_calls", "unmapped_tool_calls")])
def test_a_message_key_with_training_meaning_rejects_with_its_reason(key, reason):
    rec = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho", key: "x"}]}
    r = outcome(rec, _proc())
    assert isinstance(r, Reject) and r.reason == reason and r.pointer == f"/messages/1/{key}"
    rec["messages"][1][key] = None  # empty: nothing to lose, counted like any other key
    assert outcome(rec, _proc()).unknown_keys == (f"/messages/*/{key}",)


def test_meaning_keys_in_formats_that_do_not_convert_them():
    r = outcome({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                 "functions": [{"name": "f"}]}, _proc(), "sharegpt")
    assert isinstance(r, Reject) and r.reason == "unmapped_tools"
    r = outcome({"instruction": "q", "output": "a", "reasoning": "because"}, _proc(), "alpaca")
    assert isinstance(r, Reject) and r.reason == "reasoning_not_rendered" and r.pointer == "/reasoning"


def test_strict_keys_rejects_what_would_be_counted():
    rec = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}], "meta": 1}
    assert isinstance(outcome(rec, _proc()), Conversation)
    r = outcome(rec, _proc(strict=True))
    assert isinstance(r, Reject) and r.reason == "unknown_key" and "/meta" in r.message


def test_every_key_of_the_corpora_is_accounted(shared_corpus_or_none):
    proc = _proc()
    for rec in _corpus(shared_corpus_or_none):
        assert_every_key_accounted(rec, outcome(rec, proc))


@pytest.fixture
def shared_corpus_or_none(request):
    try:
        return request.getfixturevalue("shared_corpus")
    except pytest.skip.Exception:
        return None


_NAME = st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(sorted(REASONING_KEYS | CALL_KEYS
                                                                           | RECORD_MEANING)))
_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_RECORDS = generate_records(40, seed=9, tools=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(_RECORDS) - 1),
       top=st.dictionaries(_NAME, _VALUE, max_size=3),
       per_message=st.lists(st.tuples(st.integers(0, 20), _NAME, _VALUE), max_size=4),
       strict=st.booleans())
def test_no_key_is_lost_whatever_is_added(which, top, per_message, strict):
    base = _RECORDS[which]
    rec = copy.deepcopy(base)
    added: list[tuple[str, str, object]] = []  # (level, key, value)
    for key, value in top.items():
        if key not in rec and key not in SPEC.record:
            rec[key] = value
            added.append(("", key, value))
    for i, key, value in per_message:
        m = rec["messages"][i % len(rec["messages"])]
        if key not in m and key not in SPEC.turn:
            m[key] = value
            added.append(("/messages/*", key, value))
    proc = _proc(strict)
    result = outcome(rec, proc)
    assert_every_key_accounted(rec, result)
    meaning = [(lvl, k) for lvl, k, v in added if not empty(v)
               and k in (RECORD_MEANING if lvl == "" else TURN_MEANING)]
    if meaning:
        assert isinstance(result, Reject) and result.reason in MEANING_REASONS, (meaning, result)
        return
    if added and strict:
        assert isinstance(result, Reject) and result.reason == "unknown_key"
        return
    assert isinstance(result, Conversation), result
    assert set(result.unknown_keys) == {f"{lvl}/{k[:64]}" for lvl, k, _ in added}
    want = outcome(base, proc)
    assert proc.renderer.render(result) == proc.renderer.render(want)  # nothing read from the extra keys


def test_counters_cap_their_names_and_merge_in_any_order():
    chunk: dict[str, int] = {}
    for i in range(30):
        count_names(chunk, (f"/k{i}",), cap=10)
    assert len(chunk) == 11 and chunk[OTHER] == 20
    a, b = {"/x": 3, "/y": 1, OTHER: 2}, {"/y": 2, "/z": 5}
    merged_ab, merged_ba = dict(a), dict(b)
    for k, v in b.items():
        merged_ab[k] = merged_ab.get(k, 0) + v
    for k, v in a.items():
        merged_ba[k] = merged_ba.get(k, 0) + v
    assert list(top_names(merged_ab, 2).items()) == list(top_names(merged_ba, 2).items()) == \
        [("(other)", 5), ("/x", 3), ("/z", 5)]  # /x and /y tie at 3: by name


# one valid record per format, and where its turns are (the path-like name and how to reach them)
SHAPES = {
    "sharegpt": ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
                 "/conversations/*", lambda o: o["conversations"]),
    "alpaca": ({"instruction": "q", "output": "a"}, None, None),
    "query_response": ({"query": "q", "response": "a", "history": [["q0", "a0"]]}, None, None),
    "pairs": ({"system": "s", "conversation": [{"human": "q", "assistant": "a"}]}, "/conversation/*",
              lambda o: o["conversation"]),
    "oasst_tree": ({"message_tree_id": "t", "prompt": {"role": "prompter", "text": "q", "replies": [
        {"role": "assistant", "text": "a"}]}}, "/**", lambda o: [o["prompt"], o["prompt"]["replies"][0]]),
    "message_list": ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "/*", lambda o: o),
    "prompt_completion": ({"prompt": [{"role": "user", "content": "q"}],
                           "completion": [{"role": "assistant", "content": "a"}]}, "/prompt/*", lambda o: o["prompt"]),
    "text": ({"text": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\na<|eot_id|>"}, None, None),
}


@settings(max_examples=60, deadline=None)
@given(top=st.dictionaries(_NAME, _VALUE, max_size=2), turn=st.dictionaries(_NAME, _VALUE, max_size=2))
@pytest.mark.parametrize("fmt", sorted(SHAPES))
def test_no_key_is_lost_in_any_format(fmt, top, turn):
    base, turn_path, turns_of = SHAPES[fmt]
    spec = ADAPTERS[fmt].keys
    rec = copy.deepcopy(base)
    added = []
    if isinstance(rec, dict):
        for k, v in top.items():
            if k not in spec.record and k not in rec:
                rec[k] = v
                added.append(("", k, v))
    if turn_path is not None:
        for k, v in turn.items():
            if k not in spec.turn and all(k not in t for t in turns_of(rec)):
                turns_of(rec)[-1][k] = v
                added.append((turn_path, k, v))
    result = outcome(rec, _proc(template="llama3"), fmt)
    meaning = [k for lvl, k, v in added if not empty(v) and k in (RECORD_MEANING if lvl == "" else TURN_MEANING)]
    if meaning:
        assert isinstance(result, Reject) and result.reason in MEANING_REASONS, (meaning, result)
    else:
        assert isinstance(result, Conversation), result
        assert set(result.unknown_keys) == {f"{lvl}/{k[:64]}" for lvl, k, _ in added}
