"""The normalised record the templates render, and the rejection that replaces a record.

Input comes in many loose shapes (``ipython`` vs ``tool``, arguments as objects or JSON strings,
content as a string or as a list of text parts). Everything is normalised once, at the boundary,
into these small immutable types so that the templates never have to guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: Any  # a decoded JSON object


@dataclass(slots=True, unsafe_hash=True)
class Message:
    """One normalised message. Treated as immutable (changed only through ``dataclasses.replace``),
    but not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, which
    makes building one several times dearer, and every record builds a few."""

    role: Role
    content: str  # text as given (joined parts); templates trim where the official one does
    source_role: str = ""  # the role as written ("ipython" stays visible to the Llama-3.0 template)
    tool_call: ToolCall | None = None
    train: bool = True  # False for weight 0; only meaningful on assistant messages


@dataclass(slots=True)
class Conversation:
    """A validated record, ready to render."""

    id: str
    messages: list[Message]
    tools: list[dict] | None = None
    source: str = ""
    line: int = 0
    has_special_text: bool = False
    pieces: list | None = None  # set by adapters that render themselves (text, prompt/completion)
    builtin_tools: tuple[str, ...] = ()  # Llama-3.1 built-in tools in effect (record's, else the pipeline's)
    unknown_keys: tuple[str, ...] = ()  # path-like names of keys no stage read (counted per run)


@dataclass(slots=True)
class Rejection:
    """Why a record did not become a row. ``reason`` is a stable code: it becomes a counter."""

    reason: str
    message: str
    stage: str
    source: str = ""
    line: int = 0
    id: str | None = None
    pointer: str = ""
    original: str | None = None
    extra: dict = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)  # every problem found, the first one first

    def to_json(self) -> dict:
        out = {
            "source": self.source,
            "line": self.line,
            # a record without a usable id still gets the id its row would have had
            "id": self.id if self.id is not None else (f"{self.source}:{self.line}" if self.source else None),
            "stage": self.stage,
            "reason": self.reason,
            "message": self.message,
        }
        if self.pointer:
            out["pointer"] = self.pointer
        if len(self.problems) > 1:
            out["problems"] = self.problems
        out.update(self.extra)
        out["original"] = self.original
        return out


MAX_PROBLEMS = 20  # per record: enough to fix it in one pass, bounded on hostile input


class Reject(Exception):
    """Raised inside a stage to turn the current record into a Rejection.

    ``problems`` lists every problem found (dicts with reason, message, pointer), the first being
    this one's own, so the reason counters stay those of the first problem.
    """

    def __init__(self, reason: str, message: str, pointer: str = "", problems: list[dict] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.pointer = pointer
        self.problems = problems or []

    def as_problem(self) -> dict:
        return {"reason": self.reason, "message": self.message, "pointer": self.pointer}

    @classmethod
    def combine(cls, rejects: list[Reject]) -> Reject:
        """One Reject for several problems of a record, duplicates dropped (bounded: see ``MAX_PROBLEMS``)."""
        flat: list[dict] = []
        seen: set[tuple] = set()
        extra = 0
        for r in rejects:
            for p in r.problems or [r.as_problem()]:
                key = (p["reason"], p["message"], p["pointer"])
                if key in seen:
                    continue
                if len(flat) < 2 * MAX_PROBLEMS:  # producers cap themselves; this is the safety net
                    seen.add(key)
                    flat.append(p)
                else:
                    extra += 1
        if extra:
            flat[-1] = {"reason": "more_problems", "message": f"and {extra + 1} more problem(s)", "pointer": ""}
        first = rejects[0]
        return cls(first.reason, first.message, first.pointer, flat if len(flat) > 1 else [])
