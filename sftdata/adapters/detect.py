"""Choose an input format per file from its first records (``--input-format auto``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FORMATS = ("messages", "sharegpt", "alpaca", "text", "prompt_completion")


def detect_format(samples: Iterable[Any]) -> str | None:
    """The format most of the first records look like, or None when nothing is recognisable."""
    votes: dict[str, int] = {}
    for obj in samples:
        if not isinstance(obj, dict):
            continue
        if "messages" in obj:
            kind = "messages"
        elif "conversations" in obj:
            kind = "sharegpt"
        elif "instruction" in obj and "output" in obj:
            kind = "alpaca"
        elif "prompt" in obj and "completion" in obj:
            kind = "prompt_completion"
        elif "text" in obj:
            kind = "text"
        else:
            continue
        votes[kind] = votes.get(kind, 0) + 1
    if not votes:
        return None
    return max(sorted(votes), key=lambda k: votes[k])
