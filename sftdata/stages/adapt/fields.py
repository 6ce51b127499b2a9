"""Custom field names (``read.fields`` in the pipeline YAML) mapped to the canonical ones.

Exports name things their own way (``conversation`` for ``messages``, ``loss_weight`` for
``weight``, ``speaker`` for ``role``). The mapping is applied once, before the format adapter,
so the adapters and the schema only ever see canonical names.
"""

from __future__ import annotations

from typing import Any

# canonical name -> where it lives: the record ("top") or each message/turn ("message").
TOP_LEVEL = {"id", "messages", "tools", "conversations", "system", "instruction", "input", "output", "history",
             "text", "prompt", "completion"}
MESSAGE_LEVEL = {"role", "content", "weight", "tool_calls", "name", "from", "value"}
LIST_KEYS = ("messages", "conversations", "prompt", "completion")


def apply_field_map(obj: Any, fields: dict[str, str]) -> Any:
    """Rename source keys to canonical ones. Records that are not objects pass through untouched."""
    if not fields or not isinstance(obj, dict):
        return obj
    out = dict(obj)
    for canon, src in fields.items():
        if canon in TOP_LEVEL and src in out and canon not in obj:
            out[canon] = out.pop(src)
    msg_map = {src: canon for canon, src in fields.items() if canon in MESSAGE_LEVEL}
    if msg_map:
        for key in LIST_KEYS:
            turns = out.get(key)
            if isinstance(turns, list):
                out[key] = [_rename(t, msg_map) if isinstance(t, dict) else t for t in turns]
    return out


def _rename(turn: dict, msg_map: dict[str, str]) -> dict:
    renamed = {}
    for key, value in turn.items():
        canon = msg_map.get(key)
        renamed[canon if canon and canon not in turn else key] = value
    return renamed
