"""Three more shapes real files come in, each mapped to a ``messages`` record.

* ``message_list``: a JSON Lines line that is itself the list of messages
  (``[{"role": "user", ...}, {"role": "assistant", ...}]``).
* ``query_response``: ms-swift's ``{"system"?, "query", "response", "history"?: [[query, response], ...]}``.
* ``pairs``: a conversation as a list of exchanges, ``{human, assistant}``, ``{user, assistant}``
  or Capybara's ``{input, output}``, under ``conversation`` (or ``conversations``, ``pairs``,
  ``turns``, ``dialogue``), with an optional top-level ``system``; a record that is one such pair
  is a one-exchange conversation.

Each knows how to recognise itself (``looks_like_*``) and which keys it reads (``KeySpec``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sftdata.stages.adapt.keys import MESSAGE_KEYS, KeySpec
from sftdata.stages.records import Reject

PAIR_SHAPES = (("human", "assistant"), ("user", "assistant"), ("input", "output"))
PAIR_LISTS = ("conversation", "conversations", "pairs", "turns", "dialogue")


def looks_like_message_list(obj: Any) -> bool:
    return (isinstance(obj, list) and bool(obj) and all(isinstance(m, dict) for m in obj)
            and all("role" in m for m in obj))


def list_to_messages(obj: Any) -> dict:
    if not isinstance(obj, list):
        raise Reject("not_a_message_list", "a message_list line must be a JSON list of messages")
    return {"messages": obj}


def _walk_list(obj: Any) -> Iterator[tuple[str, dict, bool, str]]:
    if isinstance(obj, list):
        for i, m in enumerate(obj):
            if isinstance(m, dict):
                yield "/*", m, True, f"/{i}"


MESSAGE_LIST_KEYS = KeySpec(frozenset(), MESSAGE_KEYS | {"function_call"}, walk=_walk_list)


def looks_like_query_response(obj: dict) -> bool:
    return "query" in obj and "response" in obj


def _text(value: Any, ptr: str, reason: str) -> str:
    if not isinstance(value, str):
        raise Reject(reason, f"{ptr}: expected a string", ptr)
    return value


def query_response_to_messages(obj: Any) -> dict:
    """ms-swift's query/response/history record; raises Reject (``adapter_query_response``)."""
    if not isinstance(obj, dict):
        raise Reject("not_an_object", "a record must be a JSON object")
    reason = "adapter_query_response"
    messages: list[dict] = []
    system = obj.get("system")
    if system is not None and _text(system, "/system", reason).strip():
        messages.append({"role": "system", "content": system})
    history = obj.get("history") or []
    if not isinstance(history, list):
        raise Reject(reason, "/history: expected a list of [query, response] pairs", "/history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise Reject(reason, f"/history/{i}: expected [query, response] strings", f"/history/{i}")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    messages += [{"role": "user", "content": _text(obj.get("query"), "/query", reason)},
                 {"role": "assistant", "content": _text(obj.get("response"), "/response", reason)}]
    return _with_id(obj, messages)


QUERY_RESPONSE_KEYS = KeySpec(frozenset({"id", "system", "query", "response", "history"}))


def _with_id(obj: dict, messages: list[dict]) -> dict:
    out: dict = {"messages": messages}
    if "id" in obj:
        out["id"] = obj["id"]
    return out


def pair_shape(turn: Any) -> tuple[str, str] | None:
    """The (user key, assistant key) of one exchange, or None."""
    if not isinstance(turn, dict):
        return None
    return next(((u, a) for u, a in PAIR_SHAPES if u in turn and a in turn), None)


def pair_list_key(obj: dict) -> str | None:
    """The key holding the list of exchanges ("" for a record that is one exchange), or None."""
    for key in PAIR_LISTS:
        turns = obj.get(key)
        if isinstance(turns, list) and turns and all(pair_shape(t) for t in turns):
            return key
    return "" if pair_shape(obj) and "instruction" not in obj else None


def looks_like_pairs(obj: dict) -> bool:
    return pair_list_key(obj) is not None


def pairs_to_messages(obj: Any) -> dict:
    """A list of exchanges; raises Reject (``adapter_pairs``)."""
    if not isinstance(obj, dict):
        raise Reject("not_an_object", "a record must be a JSON object")
    key = pair_list_key(obj)
    if key is None:
        raise Reject("adapter_pairs", f"no list of exchanges ({' / '.join('{' + ', '.join(p) + '}' for p in PAIR_SHAPES)})"
                     f" under {', '.join(PAIR_LISTS)}", "")
    turns = obj[key] if key else [obj]
    messages: list[dict] = []
    system = obj.get("system")
    if system is not None and _text(system, "/system", "adapter_pairs").strip():
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        u, a = pair_shape(turn) or ("", "")
        ptr = f"/{key}/{i}" if key else ""
        messages += [{"role": "user", "content": _text(turn[u], f"{ptr}/{u}", "adapter_pairs")},
                     {"role": "assistant", "content": _text(turn[a], f"{ptr}/{a}", "adapter_pairs")}]
    return _with_id(obj, messages)


_PAIR_TURN = frozenset(k for shape in PAIR_SHAPES for k in shape)


def _walk_pairs(obj: Any) -> Iterator[tuple[str, dict, bool, str]]:
    if not isinstance(obj, dict):
        return
    key = pair_list_key(obj)
    if key == "":  # the record is the exchange: its keys are read at the record level
        yield "", obj, True, ""
        return
    yield "", {k: v for k, v in obj.items() if k != key}, False, ""  # another list of exchanges is counted
    for i, turn in enumerate(obj.get(key) or () if key else ()):
        yield f"/{key}/*", turn, True, f"/{key}/{i}"


PAIRS_KEYS = KeySpec(frozenset({"id", "system"}), _PAIR_TURN | {"id", "system"}, walk=_walk_pairs)
