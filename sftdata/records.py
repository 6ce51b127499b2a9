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


@dataclass(frozen=True, slots=True)
class Message:
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

    def to_json(self) -> dict:
        out = {
            "source": self.source,
            "line": self.line,
            "id": self.id,
            "stage": self.stage,
            "reason": self.reason,
            "message": self.message,
        }
        if self.pointer:
            out["pointer"] = self.pointer
        out.update(self.extra)
        out["original"] = self.original
        return out


class Reject(Exception):
    """Raised inside a stage to turn the current record into a Rejection."""

    def __init__(self, reason: str, message: str, pointer: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.pointer = pointer
