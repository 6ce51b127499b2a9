"""The rules of the shapes of issue 32, one by one: legacy function calling, a top-level system
prompt, tool results that name another call, the tree rule, pairs, query/response, message lists
in ``.json`` files, and the suggestions for files of no known shape."""

from __future__ import annotations

import pytest

from sftdata.stages.adapt import looks_like
from sftdata.stages.adapt.chat_shapes import pairs_to_messages, query_response_to_messages
from sftdata.stages.adapt.detect import detect
from sftdata.stages.adapt.legacy import check_tool_results, modernise
from sftdata.stages.adapt.tree import tree_to_messages
from sftdata.stages.read.jsonl import json_layout
from sftdata.stages.records import Reject

USER, ASSISTANT = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
CALL = {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"x": 1}'}}


def test_legacy_becomes_the_modern_shape():
    rec = {"id": 1, "functions": [{"name": "f"}],
           "messages": [USER, CALL, {"role": "function", "name": "f", "content": "r"}, ASSISTANT]}
    assert modernise(rec) == {"id": 1, "tools": [{"type": "function", "function": {"name": "f"}}], "messages": [
        USER, {"role": "assistant", "content": None,
               "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "tool", "name": "f", "content": "r"}, ASSISTANT]}
    assert looks_like(rec) == "openai_functions"


@pytest.mark.parametrize("change,reason", [
    (lambda r: r.update(tools=[{"type": "function", "function": {"name": "g"}}]), "conflicting_tools"),
    (lambda r: r["messages"][1].update(function_call={"arguments": "{}"}), "invalid_function_call"),
    (lambda r: r["messages"][1].update(function_call={"name": "f"}), "invalid_function_call"),
    (lambda r: r["messages"][0].update(function_call={"name": "f", "arguments": "{}"}), "invalid_function_call"),
    (lambda r: r["messages"][1].update(tool_calls=[{"function": {"name": "f", "arguments": {}}}]),
     "multiple_tool_calls"),
    (lambda r: r.update(functions="f"), "wrong_type"),
])
def test_legacy_records_that_cannot_be_converted_are_rejected(change, reason):
    rec = {"functions": [{"name": "f"}], "messages": [dict(USER), dict(CALL), dict(ASSISTANT)]}
    change(rec)
    with pytest.raises(Reject) as exc:
        modernise(rec)
    assert exc.value.reason == reason


def test_a_top_level_system_prompt_is_kept():
    assert modernise({"system": "S", "messages": [USER, ASSISTANT]})["messages"][0] == {"role": "system",
                                                                                       "content": "S"}
    same = {"system": "S", "messages": [{"role": "system", "content": "S"}, USER, ASSISTANT]}
    assert modernise(same)["messages"] == same["messages"]
    with pytest.raises(Reject) as exc:
        modernise({"system": "S", "messages": [{"role": "system", "content": "T"}, USER, ASSISTANT]})
    assert exc.value.reason == "conflicting_system"


def test_a_tool_result_for_another_call_is_rejected():
    call = {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {}}}]}
    rec = {"messages": [USER, call, {"role": "tool", "tool_call_id": "c1", "content": "r"}, ASSISTANT]}
    check_tool_results(rec)
    rec["messages"][2]["tool_call_id"] = "c2"
    with pytest.raises(Reject) as exc:
        check_tool_results(rec)
    assert exc.value.reason == "tool_result_mismatch" and exc.value.pointer == "/messages/2/tool_call_id"
    del rec["messages"][2]["tool_call_id"]  # no id: position is the pairing
    check_tool_results(rec)


def _node(text, role, rank=None, replies=(), **kw):
    n = {"role": role, "text": text, "replies": list(replies), **kw}
    if rank is not None:
        n["rank"] = rank
    return n


def test_the_tree_rule_takes_the_best_ranked_reply_at_each_level():
    tree = {"message_tree_id": "t", "prompt": _node("q", "prompter", replies=[
        _node("unranked", "assistant"),
        _node("second", "assistant", rank=1),
        _node("deleted", "assistant", rank=0, deleted=True),
        _node("best", "assistant", rank=0, replies=[
            _node("tie-first", "prompter", rank=0, replies=[_node("end", "assistant")]),
            _node("tie-second", "prompter", rank=0)])])}
    rec = tree_to_messages(tree)
    assert rec == {"id": "t", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "best"},
                                           {"role": "user", "content": "tie-first"},
                                           {"role": "assistant", "content": "end"}]}
    bare = _node("q", "prompter", replies=[_node("a", "assistant")], message_id="m0")
    assert tree_to_messages(bare) == {"id": "m0", "messages": [{"role": "user", "content": "q"},
                                                               {"role": "assistant", "content": "a"}]}
    with pytest.raises(Reject) as exc:
        tree_to_messages(_node("q", "prompter", replies=[_node("a", "moderator")]))
    assert exc.value.reason == "unknown_role" and exc.value.pointer == "/replies/0/role"


def test_pairs_and_query_response():
    assert pairs_to_messages({"system": "S", "conversation": [{"human": "q", "assistant": "a"}]})["messages"] == [
        {"role": "system", "content": "S"}, USER, ASSISTANT]
    assert pairs_to_messages({"user": "q", "assistant": "a"})["messages"] == [USER, ASSISTANT]
    assert looks_like({"input": "q", "output": "a", "instruction": "i"}) == "alpaca"  # not a pair
    assert looks_like({"conversations": [{"human": "q", "assistant": "a"}]}) == "pairs"  # not ShareGPT
    assert looks_like({"conversations": [{"from": "human", "value": "q"}]}) == "sharegpt"
    with pytest.raises(Reject) as exc:
        pairs_to_messages({"conversation": [{"input": 1, "output": "a"}]})
    assert exc.value.reason == "adapter_pairs"
    swift = {"query": "q", "response": "a", "history": [["q0", "a0"]], "system": "S"}
    assert [m["content"] for m in query_response_to_messages(swift)["messages"]] == ["S", "q0", "a0", "q", "a"]
    with pytest.raises(Reject) as exc:
        query_response_to_messages({"query": "q", "response": "a", "history": [["only one"]]})
    assert exc.value.reason == "adapter_query_response"


def test_json_lines_of_message_lists_under_a_json_name():
    line = b'[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]'
    assert json_layout(line + b"\n" + line + b"\n") == "lines"
    assert json_layout(line + b"\n") == "value"  # one line: an array of records, as before
    assert json_layout(b'[\n  {"messages": []}\n]\n') == "value"


def test_suggestions_are_checked_by_detecting_again():
    seen = detect([{"chat": [{"from": "human", "val": "q"}, {"from": "gpt", "val": "a"}]}])
    assert seen.format is None and seen.suggestion == "--input-format sharegpt --field conversations=chat " \
                                                      "--field value=val"
    assert detect([{"a": 1}]).suggestion is None


def test_every_root_to_leaf_path_in_order():
    from sftdata.stages.adapt.tree import tree_paths_of

    tree = _node("q", "prompter", message_id="r", replies=[
        _node("a1", "assistant", rank=1, replies=[_node("q2", "prompter", replies=[_node("a2", "assistant")])]),
        _node("gone", "assistant", rank=0, deleted=True),
        _node("a3", "assistant", rank=0)])
    own, parts = tree_paths_of(tree)
    assert own == "r"
    assert [[m["content"] for m in p["messages"]] for p in parts] == [["q", "a1", "q2", "a2"], ["q", "a3"]]


def test_tree_paths_flag(tmp_path):
    import json

    from click.testing import CliRunner

    from sftdata.cli import main

    src = tmp_path / "t.jsonl"
    tree = _node("q", "prompter", replies=[_node("a1", "assistant"), _node("a2", "assistant")])
    src.write_text(json.dumps(tree) + "\n")
    res = CliRunner().invoke(main, ["validate", str(src), "--input-format", "oasst_tree", "--tree-paths", "all"])
    assert res.exit_code == 0 and "2 records checked, 2 valid" in res.output
    res = CliRunner().invoke(main, ["validate", str(src), "--input-format", "oasst_tree"])
    assert res.exit_code == 0 and "1 records checked, 1 valid" in res.output


def test_a_second_source_of_the_same_text_is_never_ignored():
    from sftdata.stages.adapt import ADAPTERS
    from sftdata.stages.adapt.alpaca import alpaca_to_messages
    from sftdata.stages.adapt.keys import unknown_keys

    with pytest.raises(Reject) as exc:
        alpaca_to_messages({"instruction": "q", "output": "a", "response": "b"})
    assert exc.value.reason == "adapter_alpaca" and exc.value.pointer == "/response"
    assert alpaca_to_messages({"instruction": "q", "output": "a", "response": "a"})["messages"][-1]["content"] == "a"
    two = {"conversation": [{"input": "q", "output": "a"}], "pairs": [{"user": "q", "assistant": "b"}]}
    assert unknown_keys(two, ADAPTERS["pairs"].keys) == ("/pairs",)


def test_a_legacy_result_named_for_another_function_is_rejected():
    rec = {"messages": [USER, dict(CALL), {"role": "function", "name": "g", "content": "r"}, ASSISTANT]}
    with pytest.raises(Reject) as exc:
        check_tool_results(modernise(rec))
    assert exc.value.reason == "tool_result_mismatch" and exc.value.pointer == "/messages/2/name"
    rec["messages"][2]["name"] = "f"
    check_tool_results(modernise(rec))
