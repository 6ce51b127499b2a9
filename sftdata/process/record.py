"""One record through the stages: parse -> adapt -> validate -> render -> encode (ids + labels).

Why its own module: this is the part a reader of the code most wants to follow, and the part
that must behave the same in a worker process, a Ray task, ``sftdata validate`` and
``audit --source``. It holds no I/O: a chunk feeds it parsed objects and gets back either a
``Conversation`` (and then its encoding) or a ``Rejection`` with a stable reason code. Nothing is
dropped silently and a malformed record never stops the run: the one funnel ``reject_of`` turns
any exception of a record into a rejection (``internal_error`` for a bug), while faults of the
run itself (``OSError``, ``MemoryError``) are re-raised so the run stops and stays resumable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import orjson

from sftdata.config import Settings
from sftdata.stages.adapt import adapt, adapt_expanded
from sftdata.stages.encode import PieceEncoder
from sftdata.stages.parse import record_id
from sftdata.stages.read.jsonl import Chunk
from sftdata.stages.read.sources import iter_records
from sftdata.stages.records import Conversation, Reject, Rejection
from sftdata.stages.render import Llama3Renderer
from sftdata.tokenizer import Tokenizer, load_tokenizer

RUN_FAULTS = (OSError, MemoryError)  # not about the record: stop the run, keep it resumable


def _canonical(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: the stdlib writes them exactly
        import json

        return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def conversation_hashes(conv: Conversation) -> tuple[str, str]:
    """(content hash, prompt hash) of the normalised conversation.

    Content: roles, content after the template's trimming, tool calls, tools, weights. Prompt:
    the same over the non-assistant messages and tools only, for train/eval overlap on prompts.
    """
    msgs = [[m.role, m.content.strip() if m.role != "tool" else m.content,
             [m.tool_call.name, m.tool_call.arguments] if m.tool_call else None, m.train] for m in conv.messages]
    builtin = [list(conv.builtin_tools)] if conv.builtin_tools else []  # absent: hashes as before
    content = _canonical([msgs, conv.tools, *builtin])
    prompt = _canonical([[m[:2] for m in msgs if m[0] != "assistant"], conv.tools, *builtin])
    return (hashlib.blake2b(content, digest_size=16).hexdigest(),
            hashlib.blake2b(prompt, digest_size=16).hexdigest())


def original_text(raw: bytes) -> str:
    """The original line, whole (invalid UTF-8 bytes kept as backslash escapes)."""
    return raw.decode("utf-8", errors="backslashreplace")


def reject_of(exc: Exception) -> Reject:
    """The one funnel from an exception raised for a record to its rejection."""
    if isinstance(exc, Reject):
        return exc
    return Reject("internal_error", f"{type(exc).__name__}: {exc} (please report this record)")


class RecordProcessor:
    """adapt -> validate -> render -> encode for one parsed record. Holds the per-process state
    (the tokenizer, loaded on first use: validation alone never needs it)."""

    def __init__(self, settings: Settings, tokenizer: Tokenizer | None = None) -> None:
        self.settings = settings
        self._tokenizer = tokenizer
        self._encoder: PieceEncoder | None = None
        self.renderer = Llama3Renderer.for_settings(settings)

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.settings.tokenizer)
        return self._tokenizer

    @property
    def encoder(self) -> PieceEncoder:
        if self._encoder is None:
            self._encoder = PieceEncoder(self.tokenizer, self.settings.max_length, self.settings.truncation)
        return self._encoder

    def conversation(self, obj: Any, source: str, line: int, fmt: str = "messages") -> Conversation:
        """Stages adapt and validate: the format's adapter (``sftdata.stages.adapt.adapt``)."""
        return adapt(obj, fmt, self.settings, self.renderer, source, line)

    def conversations(self, obj: Any, source: str, line: int, fmt: str = "messages"
                      ) -> list[tuple[str | None, Conversation | Reject]]:
        """(id, conversation or rejection) of every conversation a record holds: one, except for a
        tree read with ``tree_paths: all`` (one per path). Raises Reject for the record as a whole."""
        many = adapt_expanded(obj, fmt, self.settings, self.renderer, source, line)
        if many is not None:
            return list(many)
        return [(record_id(obj), self.conversation(obj, source, line, fmt))]

    def encode(self, conv: Conversation):
        return self.encoder.encode(conv.pieces if conv.pieces is not None else self.renderer.render(conv))


_PROCESSORS: dict[str, RecordProcessor] = {}


def processor_for(settings: Settings) -> RecordProcessor:
    """One ``RecordProcessor`` per settings per process: a pool worker, a reused Ray worker or the
    Python API loads the tokenizer once, not once per chunk or call."""
    key = repr(settings)  # a dataclass: the repr lists every field
    proc = _PROCESSORS.get(key)
    if proc is None:
        if len(_PROCESSORS) >= 4:  # a long-lived process serving many runs must not grow forever
            _PROCESSORS.clear()
        proc = _PROCESSORS[key] = RecordProcessor(settings)
    return proc


class BlankCounter:
    """Counts the blank lines a chunk's reader skips (they are not records)."""

    def __init__(self) -> None:
        self.count = [0]  # the readers' out-parameter shape

    @property
    def value(self) -> int:
        return self.count[0]


def validated(chunk: Chunk, settings: Settings, proc: RecordProcessor, blanks: BlankCounter | None = None
              ) -> Iterator[tuple[int, bytes, str | None, Conversation | Rejection]]:
    """Stages read, parse, adapt and validate: (line, original, id if known, conversation or rejection),
    once per conversation (a tree under ``tree_paths: all`` gives one per path, on its line)."""
    sink = blanks.count if blanks is not None else None
    for line, obj, raw, rej in iter_records(chunk, settings.max_record_bytes, settings.max_decompressed_bytes, sink,
                                            settings.max_blank_bytes):
        rid, stage = None, "parse"
        try:
            if rej is not None:
                raise rej
            rid = record_id(obj)
            stage = "validate"
            outcomes: list[tuple[str | None, Conversation | Exception]] = proc.conversations(
                obj, chunk.name, line, chunk.format)
        except RUN_FAULTS:
            raise
        except Exception as exc:  # noqa: BLE001 - no record may stop a run; keep it with a reason
            outcomes = [(rid, exc)]
        for rid_k, outcome in outcomes:
            if not isinstance(outcome, Conversation):
                r = reject_of(outcome)
                outcome = Rejection(r.reason, r.message, stage, chunk.name, line, rid_k, r.pointer,
                                    original_text(raw), problems=r.problems)
            yield line, raw, rid_k, outcome
