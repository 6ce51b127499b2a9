"""Adapters: every input format behind one contract (``Adapter``), found by name in ``ADAPTERS``.

``adapt(obj, fmt, ...)`` is what the per-record code calls: it applies the field map
(``read.fields`` / ``--field``) once, then the format's adapter. ShareGPT and Alpaca records
become ``messages`` records and go through the same schema and semantic rules; ``text`` and
``prompt_completion`` render themselves into pieces that ``PieceEncoder`` encodes exactly like a
rendered ``messages`` record, so every format shares one labelling rule and one encoder.
Detection (``looks_like``) lives beside each adapter so that a format is described in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sftdata.stages.adapt.alpaca import alpaca_to_messages
from sftdata.stages.adapt.base import AdaptContext, Adapter
from sftdata.stages.adapt.fields import apply_field_map
from sftdata.stages.adapt.prompt_completion import prompt_completion_pieces, prompt_completion_record
from sftdata.stages.adapt.sharegpt import sharegpt_to_messages
from sftdata.stages.adapt.text import ChatTurn, parse_chat_text, text_record, text_to_pieces
from sftdata.stages.parse import check_id
from sftdata.stages.records import Conversation, Reject
from sftdata.stages.validate import check_schema, to_conversation

if TYPE_CHECKING:
    from sftdata.config import Settings
    from sftdata.stages.render import Llama3Renderer


def _messages(obj: Any, ctx: AdaptContext) -> Conversation:
    check_schema(obj)
    s = ctx.settings
    return to_conversation(obj, source=ctx.source, line=ctx.line, template=ctx.renderer.template.value,
                           parts_policy=s.parts, builtin_default=tuple(s.builtin_tools),
                           tools_in_user_message=s.tools_in_user_message)


def _sharegpt(obj: Any, ctx: AdaptContext) -> Conversation:
    return _messages(sharegpt_to_messages(obj, weight_key="weight"), ctx)


def _alpaca(obj: Any, ctx: AdaptContext) -> Conversation:
    return _messages(alpaca_to_messages(obj), ctx)


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


# Order matters for detection: the first adapter a record looks like wins.
ADAPTERS: dict[str, Adapter] = {a.name: a for a in (
    Adapter("messages", _messages, lambda o: "messages" in o and not _turns_are_sharegpt(o["messages"]),
            "messages: [{role, content}, ...]"),
    Adapter("sharegpt", _sharegpt, lambda o: "conversations" in o or _turns_are_sharegpt(o.get("messages")),
            "conversations: [{from, value}, ...]"),
    Adapter("alpaca", _alpaca, lambda o: "instruction" in o and ("output" in o or "response" in o),
            "instruction + output (or response)"),
    Adapter("prompt_completion", _prompt_completion, lambda o: "prompt" in o and "completion" in o,
            "prompt + completion"),
    Adapter("text", _text, lambda o: "text" in o, "text (a rendered Llama-3 conversation)"),
)}
FORMATS = tuple(ADAPTERS)


def looks_like(obj: Any, fields: dict[str, str] | None = None) -> str | None:
    """The format a record looks like (after the field map), or None."""
    obj = apply_field_map(obj, fields or {})
    if not isinstance(obj, dict):
        return None
    return next((a.name for a in ADAPTERS.values() if a.looks_like(obj)), None)


def adapt(obj: Any, fmt: str, settings: Settings, renderer: Llama3Renderer, source: str, line: int) -> Conversation:
    """Stages adapt and validate for one parsed record: field map, then the format's adapter. Raises Reject."""
    adapter = ADAPTERS.get(fmt)
    if adapter is None:
        raise Reject("unsupported_format", f"input format {fmt!r} is not supported here")
    return adapter.convert(apply_field_map(obj, settings.fields), AdaptContext(settings, renderer, source, line))


__all__ = [
    "ADAPTERS",
    "FORMATS",
    "AdaptContext",
    "Adapter",
    "ChatTurn",
    "adapt",
    "looks_like",
    "parse_chat_text",
    "prompt_completion_pieces",
    "prompt_completion_record",
    "text_record",
    "text_to_pieces",
]
