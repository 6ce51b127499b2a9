"""Choose an input format per file from its first records (``--input-format auto``).

Each record votes for the first adapter it looks like (``sftdata.stages.adapt.looks_like``, after the
field map, so ``--field output=response`` also steers detection). A file none of whose sampled
records looks like anything is *unknown*: ``Detection.format`` is None and ``keys`` says what the
records did hold, so the user is told what was seen instead of a false "messages (detected)".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sftdata.stages.adapt import looks_like


@dataclass(frozen=True, slots=True)
class Detection:
    format: str | None  # None: nothing matched
    keys: tuple[str, ...]  # top-level keys of the sampled objects, most frequent first
    sampled: int


def detect(samples: Iterable[Any], fields: dict[str, str] | None = None) -> Detection:
    """The format most of the sampled records look like, with the keys they held."""
    votes: dict[str, int] = {}
    keys: dict[str, int] = {}
    n = 0
    for obj in samples:
        n += 1
        if isinstance(obj, dict):
            for k in obj:
                keys[k] = keys.get(k, 0) + 1
        kind = looks_like(obj, fields)
        if kind is not None:
            votes[kind] = votes.get(kind, 0) + 1
    fmt = max(sorted(votes), key=lambda k: votes[k]) if votes else None
    return Detection(fmt, tuple(sorted(keys, key=lambda k: (-keys[k], k))), n)


def detect_format(samples: Iterable[Any], fields: dict[str, str] | None = None) -> str | None:
    """The format most of the first records look like, or None when nothing is recognisable."""
    return detect(samples, fields).format


def describe_keys(keys: tuple[str, ...], limit: int = 8) -> str:
    """``a, b, c`` (and how many more), for messages."""
    if not keys:
        return "no JSON objects"
    shown = ", ".join(repr(k)[:40] for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
