"""The one contract every input format follows: a parsed record in, a ``Conversation`` out.

Why one shape: the per-record code should not know which formats exist. Each format is an
``Adapter`` in the registry (``sftdata.stages.adapt.ADAPTERS``): a name, a test that says whether a
record looks like it (used by ``--input-format auto`` and by the summary's hints), the fields it
needs, and ``convert``. Formats that map onto ``messages`` (ShareGPT, Alpaca) validate through the
same schema and rules; formats that render themselves (``text``, ``prompt_completion``) return a
Conversation whose ``pieces`` are the rendering. Adding a format is one module and one registry
entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sftdata.stages.records import Conversation

if TYPE_CHECKING:
    from sftdata.config import Settings
    from sftdata.stages.render import Llama3Renderer


@dataclass(frozen=True, slots=True)
class AdaptContext:
    """What an adapter may use besides the record: settings, the renderer, where the record came from."""

    settings: Settings
    renderer: Llama3Renderer
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class Adapter:
    """One input format. ``convert`` raises ``Reject``; ``looks_like`` never raises."""

    name: str
    convert: Callable[[Any, AdaptContext], Conversation]
    looks_like: Callable[[dict], bool]
    needs: str  # the fields it reads, for hints ("instruction + output (or response)")
