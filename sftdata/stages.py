"""The per-record stages and the unit of work that runs them over one chunk.

read -> parse -> validate -> render -> label (tokenize + mask) -> write. Each stage either passes
a record on or turns it into a ``Rejection`` with a stable reason code; nothing is dropped
silently and a malformed line never stops the run. ``process_chunk`` is what a worker process
(or a Ray task) runs: it writes its own shards and quarantine file and returns only counts and
shard records, so token lists never travel between processes.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from sftdata.adapters import adapt
from sftdata.config import Settings
from sftdata.constants import WORK_DIR
from sftdata.encode import PieceEncoder
from sftdata.packing import PACKED_SCHEMA, Packer
from sftdata.parse import record_id
from sftdata.readers.jsonl import Chunk
from sftdata.readers.sources import iter_records
from sftdata.records import Conversation, Reject, Rejection
from sftdata.storage import Folder, filesystem, staging_for
from sftdata.templates import Llama3Renderer
from sftdata.tokenizer import Tokenizer, load_tokenizer
from sftdata.writers.arrow import BASE_SCHEMA, ShardRecord, ShardWriter, atomic_write_bytes


@dataclass
class ChunkResult:
    index: int
    records_read: int = 0
    records_written: int = 0
    blank_lines: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    special_text_records: int = 0
    rejected: Counter = field(default_factory=Counter)
    truncated_ids: list[str] = field(default_factory=list)
    hashes: list[tuple[str, str]] = field(default_factory=list)  # (content_hash, id) per written row
    dropped_duplicates: list[tuple[str, str]] = field(default_factory=list)  # (id, id it duplicates)
    shards: list[ShardRecord] = field(default_factory=list)

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["rejected"] = dict(sorted(self.rejected.items()))
        d["shards"] = [s.to_json() for s in self.shards]
        return d

    @classmethod
    def from_json(cls, d: dict) -> ChunkResult:
        d = dict(d)
        d["rejected"] = Counter(d["rejected"])
        d["shards"] = [ShardRecord(**s) for s in d["shards"]]
        d["hashes"] = [tuple(h) for h in d["hashes"]]
        d["dropped_duplicates"] = [tuple(h) for h in d["dropped_duplicates"]]
        return cls(**d)


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
    content = _canonical([msgs, conv.tools])
    prompt = _canonical([[m[:2] for m in msgs if m[0] != "assistant"], conv.tools])
    return (hashlib.blake2b(content, digest_size=16).hexdigest(),
            hashlib.blake2b(prompt, digest_size=16).hexdigest())


class RecordProcessor:
    """validate -> render -> label for one parsed record. Holds the per-process state."""

    def __init__(self, settings: Settings, tokenizer: Tokenizer | None = None) -> None:
        self.settings = settings
        self._tokenizer = tokenizer
        self._encoder: PieceEncoder | None = None
        self.renderer = Llama3Renderer(settings.template, settings.date_string, settings.train_on)

    @property
    def tokenizer(self) -> Tokenizer:
        """Loaded on first use: validation alone never needs it."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.settings.tokenizer, self.settings.encoder)
        return self._tokenizer

    @property
    def encoder(self) -> PieceEncoder:
        if self._encoder is None:
            self._encoder = PieceEncoder(self.tokenizer, self.settings.max_length, self.settings.truncation)
        return self._encoder

    def conversation(self, obj: Any, source: str, line: int, fmt: str = "messages") -> Conversation:
        """Stages adapt and validate (``sftdata.adapters.adapt``)."""
        return adapt(obj, fmt, self.settings, self.renderer, source, line)

    def encode(self, conv: Conversation):
        return self.encoder.encode(conv.pieces if conv.pieces is not None else self.renderer.render(conv))


def _records(chunk: Chunk, settings: Settings, result: ChunkResult) -> Iterator[tuple[int, Any, bytes, Reject | None]]:
    blank = [0]
    yield from iter_records(chunk, settings.max_record_bytes, settings.max_decompressed_bytes, blank)
    result.blank_lines += blank[0]


def _validated(chunk: Chunk, settings: Settings, proc: RecordProcessor, result: ChunkResult
               ) -> Iterator[tuple[int, bytes, str | None, Conversation | Rejection]]:
    """Stages read, parse, adapt and validate: (line, original, id if known, conversation or rejection)."""
    for line, obj, raw, rej in _records(chunk, settings, result):
        rid, stage = None, "parse"
        try:
            if rej is not None:
                raise rej
            rid = record_id(obj)
            stage = "validate"
            outcome: Conversation | Rejection = proc.conversation(obj, chunk.name, line, chunk.format)
        except (OSError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - no record may stop a run; keep it with a reason
            r = exc if isinstance(exc, Reject) else Reject(
                "internal_error", f"{type(exc).__name__}: {exc} (please report this record)")
            outcome = Rejection(r.reason, r.message, stage, chunk.name, line, rid, r.pointer, _original(raw),
                                problems=r.problems)
        yield line, raw, rid, outcome


def _original(raw: bytes) -> str:
    """The original line, whole (invalid UTF-8 bytes kept as backslash escapes)."""
    return raw.decode("utf-8", errors="backslashreplace")


def process_chunk(chunk: Chunk, settings: Settings, location: str,
                  processor: RecordProcessor | None = None, drop: dict[int, str] | None = None) -> ChunkResult:
    """Run every stage over one chunk; commit its shards, quarantine lines and done-marker into
    the output ``location`` (a folder, or a pyarrow filesystem URI: then they are written on this
    machine's staging folder and uploaded, the done-marker last).

    ``drop`` maps line numbers of this chunk to the id they duplicate (``dedupe: exact``).
    """
    proc = processor or RecordProcessor(settings)
    folder = Folder(location)
    out = staging_for(folder)
    work = out / WORK_DIR
    if folder.remote:
        work.mkdir(parents=True, exist_ok=True)
    result = ChunkResult(chunk.index)
    quarantine: list[bytes] = []
    packer = Packer(settings.max_length) if settings.packing == "bfd" else None
    schema = PACKED_SCHEMA if packer else BASE_SCHEMA
    with ShardWriter(out, chunk.index, settings.shard_size, schema) as writer:
        for line, raw, rid, outcome in _validated(chunk, settings, proc, result):
            result.records_read += 1
            if isinstance(outcome, Rejection):
                result.rejected[outcome.reason] += 1
                quarantine.append(orjson.dumps(outcome.to_json()))
                continue
            conv, stage = outcome, "dedupe"
            try:
                if drop and line in drop:
                    rid = conv.id
                    result.dropped_duplicates.append((conv.id, drop[line]))
                    raise Reject("duplicate", f"exact duplicate of {drop[line]}", "")
                stage = "label"
                enc = proc.encode(conv)
                h, ph = conversation_hashes(conv)
            except (OSError, MemoryError):  # faults of the run, not of the record: stop, stay resumable
                raise
            except Exception as exc:  # noqa: BLE001 - no record may stop a run; keep it with a reason
                r = exc if isinstance(exc, Reject) else Reject(
                    "internal_error", f"{type(exc).__name__}: {exc} (please report this record)")
                result.rejected[r.reason] += 1
                rejection = Rejection(r.reason, r.message, stage, chunk.name, line, rid, r.pointer, _original(raw))
                if r.reason == "duplicate":
                    rejection.extra["duplicate_of"] = drop[line]
                quarantine.append(orjson.dumps(rejection.to_json()))
                continue
            (packer or writer).add(conv.id, enc.input_ids, enc.labels, h, ph)
            result.records_written += 1
            result.tokens += len(enc.input_ids)
            result.trained_tokens += enc.trained
            result.special_text_records += conv.has_special_text
            result.hashes.append((h, conv.id))
            if enc.truncated:
                result.truncated_ids.append(conv.id)
        if packer is not None:
            packer.write(writer)
        result.shards = writer.finish()
    from sftdata.runner import fault_point

    fault_point("worker_chunk")
    stem = f"{WORK_DIR}/chunk-{chunk.index:06d}"
    atomic_write_bytes(out / f"{stem}.quarantine.jsonl", b"".join(q + b"\n" for q in quarantine))
    # The done-marker is written last: its presence is what --resume trusts.
    atomic_write_bytes(out / f"{stem}.json", orjson.dumps(result.to_json()))
    if folder.remote:
        for name in [s.file for s in result.shards] + [f"{stem}.quarantine.jsonl", f"{stem}.json"]:
            folder.publish(out / name, name)
    return result


# -- worker-process plumbing (multiprocessing) -------------------------------------------------
_WORKER: dict[str, Any] = {}


def _die_with_parent(parent_pid: int) -> None:
    """An orphaned worker must not keep writing into a folder that a resumed run now owns."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown is all we have
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def worker_init(settings: Settings, location: str, parent_pid: int | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    filesystem.cache_clear()  # a forked worker opens its own S3/GCS client: SDK threads do not survive fork
    _WORKER.update(settings=settings, location=location, proc=RecordProcessor(settings))


def worker_run(chunk: Chunk, drop: dict[int, str] | None = None) -> ChunkResult:
    return process_chunk(chunk, _WORKER["settings"], _WORKER["location"], _WORKER["proc"], drop)


def hash_chunk(chunk: Chunk, settings: Settings, processor: RecordProcessor | None = None
               ) -> list[tuple[int, str, str]]:
    """(line, content hash, id) of every valid record of a chunk: the first pass of ``dedupe: exact``."""
    proc = processor or RecordProcessor(settings)
    out = []
    for line, _raw, _rid, conv in _validated(chunk, settings, proc, ChunkResult(chunk.index)):
        if isinstance(conv, Conversation):
            out.append((line, conversation_hashes(conv)[0], conv.id))
    return out


def worker_hash(chunk: Chunk) -> list[tuple[int, str, str]]:
    return hash_chunk(chunk, _WORKER["settings"], _WORKER["proc"])


def validate_chunk(chunk: Chunk, settings: Settings) -> Iterator[tuple[int, Rejection | None]]:
    """Stages read + parse + adapt + validate only (the tokenizer is never loaded): what
    `sftdata validate` runs. Yields (line, rejection or None) for every record of the chunk."""
    proc = RecordProcessor(settings)
    for line, _raw, _rid, outcome in _validated(chunk, settings, proc, ChunkResult(chunk.index)):
        yield line, outcome if isinstance(outcome, Rejection) else None
