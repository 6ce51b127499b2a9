"""Adapters: every input format behind one contract (``Adapter``), found by name in ``ADAPTERS``.

``adapt(obj, fmt, ...)`` is what the per-record code calls: it applies the field map
(``read.fields`` / ``--field``) once, then the format's adapter. ShareGPT and Alpaca records
become ``messages`` records and go through the same schema and semantic rules; ``text`` and
``prompt_completion`` render themselves into pieces that ``PieceEncoder`` encodes exactly like a
rendered ``messages`` record, so every format shares one labelling rule and one encoder.
Detection (``looks_like``) lives beside each adapter so that a format is described in one place,
and so do the keys it reads: every other key of a record is counted (``Conversation.unknown_keys``)
or rejects the record (``sftdata.stages.adapt.keys``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sftdata.stages.adapt.alpaca import alpaca_to_messages
from sftdata.stages.adapt.base import AdaptContext, Adapter
from sftdata.stages.adapt.chat_shapes import (
    MESSAGE_LIST_KEYS,
    PAIRS_KEYS,
    QUERY_RESPONSE_KEYS,
    list_to_messages,
    looks_like_message_list,
    looks_like_pairs,
    looks_like_query_response,
    pairs_to_messages,
    query_response_to_messages,
)
from sftdata.stages.adapt.fields import apply_field_map
from sftdata.stages.adapt.keys import MESSAGE_KEYS, MESSAGES, KeySpec, check_strict, unknown_keys
from sftdata.stages.adapt.legacy import check_tool_results, is_legacy, modernise
from sftdata.stages.adapt.prompt_completion import prompt_completion_pieces, prompt_completion_record
from sftdata.stages.adapt.sharegpt import sharegpt_to_messages
from sftdata.stages.adapt.text import ChatTurn, parse_chat_text, text_record, text_to_pieces
from sftdata.stages.adapt.tree import TREE_KEYS, looks_like_tree, tree_paths_of, tree_to_messages
from sftdata.stages.parse import check_id
from sftdata.stages.records import Conversation, Reject
from sftdata.stages.validate import check_schema, to_conversation

if TYPE_CHECKING:
    from sftdata.config import Settings
    from sftdata.stages.render import Llama3Renderer


def _messages(obj: Any, ctx: AdaptContext) -> Conversation:
    """The messages path every format that maps onto messages ends in: legacy function calling
    and a top-level system prompt converted (``legacy.modernise``), then schema and rules."""
    obj = modernise(obj)
    check_schema(obj)
    check_tool_results(obj)
    s = ctx.settings
    return to_conversation(obj, source=ctx.source, line=ctx.line, template=ctx.renderer.template.value,
                           parts_policy=s.parts, builtin_default=tuple(s.builtin_tools),
                           tools_in_user_message=s.tools_in_user_message)


def _sharegpt(obj: Any, ctx: AdaptContext) -> Conversation:
    return _messages(sharegpt_to_messages(obj, weight_key="weight"), ctx)


def _alpaca(obj: Any, ctx: AdaptContext) -> Conversation:
    return _messages(alpaca_to_messages(obj), ctx)


def _message_list(obj: Any, ctx: AdaptContext) -> Conversation:
    return _messages(list_to_messages(obj), ctx)


def _query_response(obj: Any, ctx: AdaptContext) -> Conversation:
    return _messages(query_response_to_messages(obj), ctx)


def _pairs(obj: Any, ctx: AdaptContext) -> Conversation:
    return _messages(pairs_to_messages(obj), ctx)


def _tree(obj: Any, ctx: AdaptContext) -> Conversation:
    return _messages(tree_to_messages(obj), ctx)


def _object(obj: Any) -> dict:
    """Self-rendering formats: an object with a valid id (the schema checks it for the others)."""
    if not isinstance(obj, dict):
        raise Reject("not_an_object", "a record must be a JSON object")
    check_id(obj)
    return obj


def _text(obj: Any, ctx: AdaptContext) -> Conversation:
    s = ctx.settings
    conv, pieces = text_record(_object(obj), source=ctx.source, line=ctx.line, train_on=s.train_on,
                               text_without_chat=s.text_without_chat)
    conv.pieces = pieces
    return conv


def _prompt_completion(obj: Any, ctx: AdaptContext) -> Conversation:
    s = ctx.settings
    conv, pieces = prompt_completion_record(_object(obj), template=ctx.renderer.template, date_string=s.date_string,
                                            completion_eos=s.completion_eos, train_on=s.train_on,
                                            source=ctx.source, line=ctx.line, parts_policy=s.parts,
                                            builtin_default=tuple(s.builtin_tools),
                                            tools_in_user_message=s.tools_in_user_message)
    conv.pieces = pieces
    return conv


def _turns_are_sharegpt(turns: Any) -> bool:
    return isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict) and "from" in turns[0] \
        and "role" not in turns[0]


_SHAREGPT_TURN = frozenset({"from", "value", "role", "content", "weight"})
_TOOLS_KEYS = frozenset({"id", "tools", "custom_tools", "builtin_tools"})

# Order matters for detection: the first adapter a record looks like wins.
ADAPTERS: dict[str, Adapter] = {a.name: a for a in (
    Adapter("openai_functions", _messages, is_legacy,
            "messages with functions / function_call / role function (OpenAI's legacy function calling)", MESSAGES),
    Adapter("messages", _messages, lambda o: "messages" in o and not _turns_are_sharegpt(o["messages"]),
            "messages: [{role, content}, ...]", MESSAGES),
    Adapter("message_list", _message_list, looks_like_message_list,
            "a line that is a list of messages: [{role, content}, ...]", MESSAGE_LIST_KEYS),
    Adapter("sharegpt", _sharegpt, lambda o: ("conversations" in o and not looks_like_pairs(o))
            or _turns_are_sharegpt(o.get("messages")),
            "conversations: [{from, value}, ...]",
            KeySpec(frozenset({"id", "conversations", "messages", "system", "tools"}), _SHAREGPT_TURN,
                    ("conversations", "messages"))),
    Adapter("alpaca", _alpaca, lambda o: "instruction" in o and ("output" in o or "response" in o),
            "instruction + output (or response)",
            KeySpec(frozenset({"id", "instruction", "input", "context", "output", "response", "system", "history"}))),
    Adapter("query_response", _query_response, looks_like_query_response,
            "query + response (+ history: [[query, response], ...]), as ms-swift", QUERY_RESPONSE_KEYS),
    Adapter("pairs", _pairs, looks_like_pairs,
            "a list of exchanges {human, assistant} / {user, assistant} / {input, output} under conversation",
            PAIRS_KEYS),
    Adapter("oasst_tree", _tree, looks_like_tree,
            "an Open-Assistant message tree: {message_id, role: prompter|assistant, text, replies}", TREE_KEYS,
            tree_paths_of),
    Adapter("prompt_completion", _prompt_completion, lambda o: "prompt" in o and "completion" in o,
            "prompt + completion",
            KeySpec(_TOOLS_KEYS | {"prompt", "completion"}, MESSAGE_KEYS, ("prompt", "completion"))),
    Adapter("text", _text, lambda o: "text" in o, "text (a rendered Llama-3 conversation)",
            KeySpec(frozenset({"id", "text"}))),
)}
FORMATS = tuple(ADAPTERS)


def looks_like(obj: Any, fields: dict[str, str] | None = None) -> str | None:
    """The format a record looks like (after the field map), or None."""
    obj = apply_field_map(obj, fields or {})
    if not isinstance(obj, dict):
        return "message_list" if looks_like_message_list(obj) else None
    return next((a.name for a in ADAPTERS.values() if a.looks_like(obj)), None)


def adapt(obj: Any, fmt: str, settings: Settings, renderer: Llama3Renderer, source: str, line: int) -> Conversation:
    """Stages adapt and validate for one parsed record: field map, then the format's adapter, then
    the keys it did not read (counted on the Conversation, or rejected). Raises Reject."""
    adapter = ADAPTERS.get(fmt)
    if adapter is None:
        raise Reject("unsupported_format", f"input format {fmt!r} is not supported here")
    obj = apply_field_map(obj, settings.fields)
    conv = adapter.convert(obj, AdaptContext(settings, renderer, source, line))
    if adapter.keys is not None:
        conv.unknown_keys = unknown_keys(obj, adapter.keys)
        if settings.strict_keys:
            check_strict(conv.unknown_keys)
    return conv


def adapt_expanded(obj: Any, fmt: str, settings: Settings, renderer: Llama3Renderer, source: str,
                   line: int) -> list[tuple[str, Conversation | Reject]] | None:
    """``tree_paths: all``: (id, conversation or rejection) per conversation of a record that holds
    several (ids ``<record id>/<k>``); None when this format and these settings give one. Raises
    Reject when the record as a whole cannot be read (its keys are accounted once, for all)."""
    adapter = ADAPTERS.get(fmt)
    if adapter is None or adapter.expand is None or settings.tree_paths != "all":
        return None
    obj = apply_field_map(obj, settings.fields)
    own, parts = adapter.expand(obj)
    names = unknown_keys(obj, adapter.keys) if adapter.keys is not None else ()
    if settings.strict_keys:
        check_strict(names)
    ctx = AdaptContext(settings, renderer, source, line)
    base = str(own) if own is not None else f"{source}:{line}"
    out: list[tuple[str, Conversation | Reject]] = []
    for k, part in enumerate(parts):
        rid = f"{base}/{k}"
        if isinstance(part, Reject):
            out.append((rid, part))
            continue
        try:
            conv = _messages({**part, "id": rid}, ctx)
        except Reject as r:
            out.append((rid, r))
            continue
        conv.unknown_keys = names
        out.append((rid, conv))
    return out


__all__ = [
    "ADAPTERS",
    "FORMATS",
    "AdaptContext",
    "Adapter",
    "ChatTurn",
    "adapt",
    "adapt_expanded",
    "looks_like",
    "parse_chat_text",
    "prompt_completion_pieces",
    "prompt_completion_record",
    "text_record",
    "text_to_pieces",
]
