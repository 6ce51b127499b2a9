"""ShareGPT records to ``messages`` records.

``{"conversations": [{"from": ..., "value": ...}], "system"?: ..., "tools"?: ...}``. Speaker names
vary between exports (``human``/``user``, ``gpt``/``assistant``/``chatgpt``/``bot``), so they are
mapped once here; ``function_call`` becomes an assistant ``tool_calls`` message and
``observation``/``tool`` a tool message, as LLaMA-Factory's ShareGPT convention has it.
"""

from __future__ import annotations

from typing import Any

from sftdata.stages.records import Reject
from sftdata.stages.validate import loads_nested

SPEAKERS = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant", "model": "assistant",
    "system": "system",
    "function_call": "function_call",
    "observation": "tool", "tool": "tool", "function": "tool", "ipython": "tool",
}


def _tool_call(value: Any, pointer: str) -> dict:
    call = value
    if isinstance(value, str):
        call = loads_nested(value, pointer, "adapter_sharegpt")
    if isinstance(call, list) and len(call) == 1:
        call = call[0]
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise Reject("adapter_sharegpt", f"{pointer}: a function_call needs a JSON object with a name", pointer)
    args = call.get("arguments", call.get("parameters", {}))
    return {"type": "function", "function": {"name": call["name"], "arguments": args}}


def sharegpt_to_messages(obj: Any, *, weight_key: str | None = None, conversations_key: str = "conversations",
                         from_key: str = "from", value_key: str = "value") -> dict:
    """Map one ShareGPT record; raises Reject with reason ``adapter_sharegpt`` when it cannot."""
    if not isinstance(obj, dict):
        raise Reject("not_an_object", "a record must be a JSON object")
    if conversations_key not in obj and "messages" in obj:  # ShareGPT turns stored under `messages`
        conversations_key = "messages"
    turns = obj.get(conversations_key)
    if not isinstance(turns, list):
        raise Reject("adapter_sharegpt", f"/{conversations_key}: expected a list of turns", f"/{conversations_key}")
    messages: list[dict] = []
    system = obj.get("system")
    if isinstance(system, str) and system.strip():
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        ptr = f"/{conversations_key}/{i}"
        if not isinstance(turn, dict):
            raise Reject("adapter_sharegpt", f"{ptr}: expected an object with {from_key!r} and {value_key!r}", ptr)
        if from_key not in turn and "role" in turn:  # {role, content} turns inside `conversations`
            from_key, value_key = "role", "content"
        speaker = turn.get(from_key)
        role = SPEAKERS.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            raise Reject("unknown_role", f"{ptr}/{from_key}: found {speaker!r}, expected one of "
                         f"{', '.join(sorted(SPEAKERS))}", f"{ptr}/{from_key}")
        value = turn.get(value_key)
        if role == "function_call":
            msg: dict = {"role": "assistant", "content": None, "tool_calls": [_tool_call(value, f"{ptr}/{value_key}")]}
        else:
            msg = {"role": role, "content": value}
        if weight_key and weight_key in turn and role in ("assistant", "function_call"):
            msg["weight"] = turn[weight_key]
        messages.append(msg)
    out: dict = {"messages": messages}
    if "id" in obj:
        out["id"] = obj["id"]
    tools = obj.get("tools")
    if isinstance(tools, str):
        tools = loads_nested(tools, "/tools", "adapter_sharegpt") if tools.strip() else None
    if tools:
        out["tools"] = [t if "function" in t else {"type": "function", "function": t} for t in tools] \
            if isinstance(tools, list) and all(isinstance(t, dict) for t in tools) else tools
    return out
