"""Choose an input format per file from its first records (``--input-format auto``).

Each record votes for the first adapter it looks like (``sftdata.stages.adapt.looks_like``, after the
field map, so ``--field output=response`` also steers detection). A file none of whose sampled
records looks like anything is *unknown*: ``Detection.format`` is None and ``keys`` says what the
records did hold, so the user is told what was seen instead of a false "messages (detected)".
For such a file ``suggest`` looks for a known shape under other names (turns under another key,
a question and an answer under other names) and ``Detection.suggestion`` holds the exact flags
that read it (``--input-format messages --field messages=dialog``), checked by detecting again
with that field map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sftdata.stages.adapt import looks_like
from sftdata.stages.adapt.sharegpt import SPEAKERS

CHAT_ROLES = frozenset({"system", "user", "assistant", "tool", "ipython"})
QUESTION_KEYS = ("question", "prompt", "query", "instruction", "input", "problem", "request")
ANSWER_KEYS = ("answer", "response", "output", "completion", "target", "solution", "reply")


@dataclass(frozen=True, slots=True)
class Detection:
    format: str | None  # None: nothing matched
    keys: tuple[str, ...]  # top-level keys of the sampled objects, most frequent first
    sampled: int
    suggestion: str | None = None  # flags that would read a file of no known format, when some would


def _turns_fields(key: str, turn: dict) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """(format, field map) for a list of turns under ``key`` whose first turn is ``turn``."""
    role = next((k for k, v in turn.items() if isinstance(v, str) and v.lower() in SPEAKERS), None)
    text = next((k for k, v in turn.items() if k != role and isinstance(v, str)), None)
    if role is None or text is None:
        return None
    if turn[role].lower() in CHAT_ROLES:
        pairs = [("messages", key), ("role", role), ("content", text)]
        return "messages", tuple(p for p in pairs if p[0] != p[1])
    pairs = [("conversations", key), ("from", role), ("value", text)]
    return "sharegpt", tuple(p for p in pairs if p[0] != p[1])


def suggest(obj: Any) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """A known format under other names: (format, field map) that reads ``obj``, or None."""
    if not isinstance(obj, dict):
        return None
    found = None
    for key, value in obj.items():
        if isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
            found = _turns_fields(key, value[0])
            if found:
                break
    if found is None:
        q = next((k for k in QUESTION_KEYS if isinstance(obj.get(k), str)), None)
        a = next((k for k in ANSWER_KEYS if k != q and isinstance(obj.get(k), str)), None)
        if q and a:
            found = "alpaca", tuple(p for p in (("instruction", q), ("output", a)) if p[0] != p[1])
    if found is None or looks_like(obj, dict(found[1])) != found[0]:
        return None
    return found


def flags(fmt: str, fields: tuple[tuple[str, str], ...]) -> str:
    """``--input-format F --field a=b ...``, as a user would type it."""
    return " ".join([f"--input-format {fmt}", *(f"--field {canon}={src}" for canon, src in fields)])


def detect(samples: Iterable[Any], fields: dict[str, str] | None = None) -> Detection:
    """The format most of the sampled records look like, with the keys they held."""
    votes: dict[str, int] = {}
    keys: dict[str, int] = {}
    suggested: dict[str, int] = {}
    n = 0
    for obj in samples:
        n += 1
        if isinstance(obj, dict):
            for k in obj:
                keys[k] = keys.get(k, 0) + 1
        kind = looks_like(obj, fields)
        if kind is not None:
            votes[kind] = votes.get(kind, 0) + 1
        elif not votes:
            found = suggest(obj)
            if found is not None:
                how = flags(*found)
                suggested[how] = suggested.get(how, 0) + 1
    fmt = max(sorted(votes), key=lambda k: votes[k]) if votes else None
    hint = max(sorted(suggested), key=lambda k: suggested[k]) if suggested and fmt is None else None
    return Detection(fmt, tuple(sorted(keys, key=lambda k: (-keys[k], k))), n, hint)


def detect_format(samples: Iterable[Any], fields: dict[str, str] | None = None) -> str | None:
    """The format most of the first records look like, or None when nothing is recognisable."""
    return detect(samples, fields).format


def describe_keys(keys: tuple[str, ...], limit: int = 8) -> str:
    """``a, b, c`` (and how many more), for messages."""
    if not keys:
        return "no JSON objects"
    shown = ", ".join(repr(k)[:40] for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
