"""OpenAI's legacy function calling, and the other meaning a ``messages`` record may carry beside
what the schema names, turned into the modern shape before validation.

Legacy shape: a ``functions`` list of ``{name, description?, parameters?}``, an assistant message
with ``function_call: {name, arguments}`` (arguments an object or a JSON string) and the result
as a message with role ``function`` (and the function's ``name``). The modern shape: ``tools``
(each ``{"type": "function", "function": ...}``), ``tool_calls`` with one call, role ``tool``.
The converted record is the equivalent modern record, so it renders to the same ids token for
token and meets the same rules (``template_unsupported`` under Llama-3.0, ``conflicting_tools``
when ``tools`` says something else). The conversion runs under ``messages`` and ``auto`` too:
a call is never rendered away.

A top-level ``system`` string beside ``messages`` (some exports keep the system prompt there)
becomes the first message, or must equal the system message already there.
"""

from __future__ import annotations

import json
from typing import Any

from sftdata.stages.records import Reject

LEGACY_RECORD_KEYS = frozenset({"functions"})
LEGACY_MESSAGE_KEYS = frozenset({"function_call"})


def is_legacy(obj: Any) -> bool:
    """True for a record in the legacy shape (what ``auto`` reads as ``openai_functions``)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        return False
    if "functions" in obj:
        return True
    for m in obj["messages"]:  # a loop: every record asks, and any() over a generator costs more
        if isinstance(m, dict) and (m.get("function_call") is not None or m.get("role") == "function"):
            return True
    return False


def _tools(functions: Any) -> list:
    if not isinstance(functions, list):
        raise Reject("wrong_type", "/functions: expected a list of function definitions", "/functions")
    tools = []
    for i, fn in enumerate(functions):
        if not isinstance(fn, dict):
            raise Reject("wrong_type", f"/functions/{i}: expected an object with a name", f"/functions/{i}")
        tools.append(fn if fn.get("type") == "function" and "function" in fn else {"type": "function", "function": fn})
    return tools


def _merge_tools(out: dict, functions: Any) -> None:
    tools = _tools(functions)
    if not tools:
        return
    have = out.get("tools")
    if have and have != tools:
        raise Reject("conflicting_tools", "/functions: both functions and tools given, and they differ; pass one",
                     "/functions")
    out["tools"] = tools


def _call(value: Any, ptr: str) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        found = json.dumps(value, ensure_ascii=False, default=str)[:80]
        raise Reject("invalid_function_call", f"{ptr}: found {found}, expected {{name, arguments}}", ptr)
    if "arguments" not in value:
        raise Reject("invalid_function_call", f"{ptr}: the call has no arguments", ptr)
    return {"type": "function", "function": {"name": value["name"], "arguments": value["arguments"]}}


def _message(m: Any, i: int) -> Any:
    if not isinstance(m, dict):
        return m
    call, role = m.get("function_call"), m.get("role")
    if call is None and role != "function":
        return m
    out = {k: v for k, v in m.items() if k != "function_call"}
    if role == "function":
        out["role"] = "tool"
    if call is not None:
        ptr = f"/messages/{i}/function_call"
        if role != "assistant":
            raise Reject("invalid_function_call", f"{ptr}: only assistant messages call functions", ptr)
        if m.get("tool_calls"):
            raise Reject("multiple_tool_calls", f"{ptr}: both function_call and tool_calls given; the Llama-3 "
                         "templates render exactly one call", ptr)
        out["tool_calls"] = [_call(call, ptr)]
    return out


def _system(out: dict, system: Any) -> None:
    if system is None:
        return
    if not isinstance(system, str):
        raise Reject("wrong_type", "/system: expected a string", "/system")
    msgs = out["messages"]
    first = msgs[0] if msgs and isinstance(msgs[0], dict) else {}
    if first.get("role") == "system":
        if first.get("content") != system:
            raise Reject("conflicting_system", "/system: a top-level system prompt and a different system message; "
                         "keep one", "/system")
        return
    if system.strip():
        out["messages"] = [{"role": "system", "content": system}, *msgs]


def modernise(obj: Any) -> Any:
    """The record with legacy function calling and a top-level ``system`` in the modern shape
    (the same object when there is nothing to convert). Raises Reject."""
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        return obj
    if not ("functions" in obj or "system" in obj or is_legacy(obj)):
        return obj
    out = {k: v for k, v in obj.items() if k not in ("functions", "system")}
    out["messages"] = [_message(m, i) for i, m in enumerate(obj["messages"])]
    if obj.get("functions") is not None:
        _merge_tools(out, obj["functions"])
    _system(out, obj.get("system"))
    return out


def check_tool_results(rec: Any) -> None:
    """A tool result that names the call it answers (``tool_call_id``, or the function's ``name``
    as legacy results do) must answer the call before it: the Llama-3 templates pair a result with
    the preceding call by position alone, so a result for another call would be rendered as this
    one's. Without either, position is the pairing."""
    if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
        return
    last: dict = {}
    for i, m in enumerate(rec["messages"]):
        if not isinstance(m, dict):
            continue
        calls = m.get("tool_calls")
        if m.get("role") == "assistant" and isinstance(calls, list) and calls and isinstance(calls[0], dict):
            fn = calls[0].get("function")
            last = {"tool_call_id": calls[0].get("id"), "name": fn.get("name") if isinstance(fn, dict) else None}
        elif m.get("role") in ("tool", "ipython"):
            for key in ("tool_call_id", "name"):
                answers, call = m.get(key), last.get(key)
                if isinstance(answers, str) and isinstance(call, str) and answers != call:
                    ptr = f"/messages/{i}/{key}"
                    raise Reject("tool_result_mismatch", f"{ptr}: answers {answers!r}, but the call before it is "
                                 f"{call!r}; the template pairs a result with the call before it", ptr)
