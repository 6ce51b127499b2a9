"""No key vanishes without a trace: every key of a record and of its messages is read, converted,
counted or the reason the record is rejected.

Each adapter names the keys it reads (``KeySpec``): at the record level and in each turn (a
message, a ShareGPT turn, a pair, a tree node). What is left after that is either

* a key known to carry training meaning that the format cannot render (``TURN_MEANING``,
  ``RECORD_MEANING``): reasoning text, tool calls under another name, a ``functions`` list where
  no conversion exists. The record is rejected with that key's own reason, because rendering it
  without the key would train the model on a conversation that did not happen; or
* any other key: its path-like name (``/source``, ``/messages/*/annotation``) is returned, to be
  counted per name in the summary and the manifest (``counts.unknown_keys``), or, with
  ``strict_keys``, the record is rejected (``unknown_key``).

A meaning key whose value is empty (null, ``""``, ``[]``, ``{}``) carries nothing: it is counted
like any other unknown key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sftdata.stages.records import Reject

MAX_NAME = 64  # characters of a key name kept in a counter (hostile keys can be megabytes)

REASONING_KEYS = frozenset({"reasoning_content", "reasoning", "thinking", "thoughts"})
CALL_KEYS = frozenset({"tool_call", "function_calls", "toolCalls", "function_call"})
TURN_MEANING = REASONING_KEYS | CALL_KEYS  # keys of a message (turn) that carry training meaning
TOOL_KEYS = frozenset({"functions", "tool_definitions"})
RECORD_MEANING = TOOL_KEYS | REASONING_KEYS  # keys of a record that do (a one-turn record's reasoning)
_WHY = {
    "reasoning_not_rendered": "the Llama-3 templates have no place for reasoning text, so training on the reply "
                              "without it would teach answers without their reasoning; fold it into `content` or "
                              "remove the key",
    "unmapped_tool_calls": "tool calls under another name would be dropped; map them with --field tool_calls={key} "
                           "(OpenAI's shape) or convert them",
    "unmapped_tools": "tool definitions under a name this format does not read would be dropped; map them with "
                      "--field tools={key} or read the file as messages / openai_functions",
}


def _meaning_reject(key: str, pointer: str) -> Reject:
    reason = ("reasoning_not_rendered" if key in REASONING_KEYS
              else "unmapped_tool_calls" if key in CALL_KEYS else "unmapped_tools")
    return Reject(reason, f"{pointer}: {_WHY[reason].format(key=key)}", pointer)


Walk = Callable[[Any], Iterator[tuple[str, dict, bool, str]]]


def _walk_turns(lists: tuple[str, ...]) -> Walk:
    def walk(obj: Any) -> Iterator[tuple[str, dict, bool, str]]:
        if not isinstance(obj, dict):
            return
        yield "", obj, False, ""
        for key in lists:
            turns = obj.get(key)
            if isinstance(turns, list):
                for i, turn in enumerate(turns):
                    if isinstance(turn, dict):
                        yield f"/{key}/*", turn, True, f"/{key}/{i}"
    return walk


@dataclass(frozen=True, slots=True)
class KeySpec:
    """The keys a format reads: ``record`` at the top, ``turn`` in each object ``walk`` yields as a
    turn. ``walk(obj)`` yields (path-like name, object, is_turn, JSON pointer); by default the
    record and the items of its ``lists``."""

    record: frozenset[str]
    turn: frozenset[str] = frozenset()
    lists: tuple[str, ...] = ()
    walk: Walk | None = field(default=None, compare=False)

    def objects(self, obj: Any) -> Iterator[tuple[str, dict, bool, str]]:
        return (self.walk or _walk_turns(self.lists))(obj)


def empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and not (value.strip() if isinstance(value, str)
                                                                          else value))


def unknown_keys(obj: Any, spec: KeySpec) -> tuple[str, ...]:
    """The path-like names of the keys ``spec`` does not read, each once, in first-seen order.
    Raises Reject for a key that carries training meaning (see ``TURN_MEANING``)."""
    if spec.walk is None and _all_known(obj, spec):  # the common case, without the walk
        return ()
    names: dict[str, None] = {}
    for path, item, is_turn, pointer in spec.objects(obj):
        known = spec.turn if is_turn else spec.record
        if known.issuperset(item):
            continue
        meaning = TURN_MEANING if is_turn else RECORD_MEANING
        for key in item:
            if key in known:
                continue
            if key in meaning and not empty(item[key]):
                raise _meaning_reject(key, f"{pointer}/{key}")
            names[f"{path}/{key[:MAX_NAME]}"] = None
    return tuple(names)


def _all_known(obj: Any, spec: KeySpec) -> bool:
    if type(obj) is not dict or not spec.record.issuperset(obj):
        return False
    turn = spec.turn
    for key in spec.lists:
        turns = obj.get(key)
        if type(turns) is list:
            for t in turns:
                if type(t) is dict and not turn.issuperset(t):
                    return False
    return True


def check_strict(names: tuple[str, ...]) -> None:
    """``strict_keys``: a record carrying a key sftdata does not read is rejected."""
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise Reject("unknown_key", f"{shown}: not read by sftdata (strict_keys); remove the key(s) or map them "
                     "with --field NAME=SOURCE", names[0])


MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "weight", "name", "tool_call_id"})
MESSAGES = KeySpec(frozenset({"id", "messages", "tools", "custom_tools", "builtin_tools", "functions", "system"}),
                   MESSAGE_KEYS | {"function_call"}, ("messages",))


OTHER = "(other)"  # the bucket for names past a counter's cap
CHUNK_NAMES = 1000  # distinct names a chunk keeps (its done-marker stays small on hostile input)
MANIFEST_NAMES = 50  # distinct names the manifest lists


def count_names(counter: dict[str, int], names: tuple[str, ...], cap: int = CHUNK_NAMES) -> None:
    """Add one record's unknown-key names to ``counter`` (records per name), past ``cap`` distinct
    names into ``OTHER``. Deterministic for a given order of records."""
    for name in names:
        if name in counter or len(counter) < cap:
            counter[name] = counter.get(name, 0) + 1
        else:
            counter[OTHER] = counter.get(OTHER, 0) + 1


def top_names(counter: dict[str, int], limit: int = MANIFEST_NAMES) -> dict[str, int]:
    """The ``limit`` most frequent names (ties by name), the rest summed into ``OTHER``; sorted by
    name, so merged chunk counters give the same bytes whatever order they were added in."""
    named = sorted(((n, c) for n, c in counter.items() if n != OTHER), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(named[:limit])
    rest = sum(c for _, c in named[limit:]) + counter.get(OTHER, 0)
    if rest:
        kept[OTHER] = rest
    return dict(sorted(kept.items()))
