"""One chunk of input through the record stages, committed as shards, a quarantine part and a
done-marker (the tasks executors run over it are in ``sftdata.process.tasks``).

Why here and not in the runner: this is the unit of work. Whatever runs it, a forked worker, a
Ray task on another node or the driver itself, writes its own files and returns only counts and
shard records (``ChunkResult``), so token lists never travel between processes. The done-marker
is written last: its presence, with every shard at its recorded size, is what ``--resume``
trusts. The executors in ``sftdata.executors`` only decide *where* a task runs.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from sftdata.config import Settings
from sftdata.faults import fault_point
from sftdata.process.dedupe import json_lines, row_runs
from sftdata.process.identity import chunk_digest
from sftdata.process.record import (
    RUN_FAULTS,
    BlankCounter,
    RecordProcessor,
    conversation_hashes,
    original_text,
    reject_of,
    validated,
)
from sftdata.stages.adapt.keys import count_names
from sftdata.stages.pack import PACKED_SCHEMA, Packer
from sftdata.stages.read.jsonl import Chunk
from sftdata.stages.records import Conversation, Rejection
from sftdata.stages.write.arrow import BASE_SCHEMA, ShardRecord, ShardWriter
from sftdata.storage import Folder, work_dir
from sftdata.storage.atomic import atomic_replace, atomic_write_bytes, temp_path
from sftdata.storage.layout import chunk_marker, chunk_quarantine, shard_chunk, temp_target

NO_PART = hashlib.sha256(b"").hexdigest()  # the quarantine hash of a chunk that rejected nothing: no part file


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
    run_id: str = ""  # the run that committed this chunk (a foreign writer's markers are refused)
    input_digest: str = ""  # of the chunk's input bytes (sftdata.process.identity)
    # of the chunk's quarantine part, checked on --resume ("" in older markers); ``NO_PART``: the
    # chunk rejected nothing and has no part file
    quarantine_sha256: str = ""
    unknown_keys: Counter = field(default_factory=Counter)  # records per key name no stage read
    # the per-row lists above as bytes (``compact``), for the trip to the driver; never in a marker
    packed_lists: dict[str, bytes] | None = field(default=None, repr=False)

    @property
    def has_quarantine_part(self) -> bool:
        """Whether the chunk wrote a quarantine part (a chunk that rejected nothing writes none)."""
        return self.quarantine_sha256 != NO_PART

    def files(self) -> list[str]:
        """The chunk's committed files but its done-marker, in the order they are published."""
        return [s.file for s in self.shards] + ([chunk_quarantine(self.index)] if self.has_quarantine_part else [])

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d.pop("packed_lists")
        d["rejected"] = dict(sorted(self.rejected.items()))
        d["unknown_keys"] = dict(sorted(self.unknown_keys.items()))
        d["shards"] = [s.to_json() for s in self.shards]
        return d

    @classmethod
    def from_json(cls, d: dict) -> ChunkResult:
        d = dict(d)
        d["rejected"] = Counter(d["rejected"])
        d["unknown_keys"] = Counter(d.get("unknown_keys") or {})
        d["shards"] = [ShardRecord(**s) for s in d["shards"]]
        d["hashes"] = [tuple(h) for h in d["hashes"]]
        d["dropped_duplicates"] = [tuple(h) for h in d["dropped_duplicates"]]
        return cls(**d)

    def compact(self) -> ChunkResult:
        """Turn the lists that grow with the chunk's rows (hashes, dropped duplicates, truncated ids)
        into the bytes the driver's ``RowIndex`` spills as they are: one object per list instead of
        a tuple per row in the pickle, and no sorting in the driver. Returns self."""
        by_hash, by_id = row_runs(self.hashes)
        self.packed_lists = {"by_hash": by_hash, "by_id": by_id, "dropped": json_lines(self.dropped_duplicates),
                             "truncated": json_lines(self.truncated_ids)}
        self.hashes, self.dropped_duplicates, self.truncated_ids = [], [], []
        return self


def quarantine_line(rejection: Rejection) -> bytes:
    """A rejection as its line of ``quarantine.jsonl`` (with the newline)."""
    return orjson.dumps(rejection.to_json()) + b"\n"


def exc_rejection(exc: Exception, stage: str, source: str, line: int, rid: str | None, raw: bytes,
                  **extra: Any) -> Rejection:
    """The rejection of a record an exception stopped at ``stage`` (``reject_of``: the one funnel)."""
    r = reject_of(exc)
    rejection = Rejection(r.reason, r.message, stage, source, line, rid, r.pointer, original_text(raw))
    rejection.extra.update(extra)
    return rejection


class _Quarantine:
    """A chunk's rejected records, in input order, and their counters."""

    def __init__(self, chunk: Chunk, result: ChunkResult) -> None:
        self.chunk, self.result, self.lines = chunk, result, []

    def add(self, rejection: Rejection) -> None:
        self.result.rejected[rejection.reason] += 1
        self.lines.append(orjson.dumps(rejection.to_json()))

    def add_exc(self, exc: Exception, stage: str, line: int, rid: str | None, raw: bytes, **extra: Any) -> None:
        self.add(exc_rejection(exc, stage, self.chunk.name, line, rid, raw, **extra))

    def to_bytes(self) -> bytes:
        return b"".join(q + b"\n" for q in self.lines)


class _QuarantinePart(_Quarantine):
    """``process_chunk``'s quarantine: each line goes to the part's temporary file as it is found,
    hashed as it is written, so a chunk of many rejections (every duplicate of a ``dedupe: exact``
    run carries its original text) costs no memory; ``commit`` renames it into place. Leaving the
    ``with`` block on an exception removes the temporary file."""

    def __init__(self, chunk: Chunk, result: ChunkResult, path: Path) -> None:
        super().__init__(chunk, result)
        self.path, self.tmp = path, temp_path(path)
        self._file = None  # opened with the first line: a chunk that rejects nothing writes no part
        self._hash = hashlib.sha256()

    def __enter__(self) -> _QuarantinePart:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is not None and self._file is not None:
            self._file.close()
            self.tmp.unlink(missing_ok=True)

    def add(self, rejection: Rejection) -> None:
        self.add_line(quarantine_line(rejection), rejection.reason)

    def add_line(self, line: bytes, reason: str) -> None:
        """A quarantine line as ``quarantine_line`` made it (here or in an earlier pass), for ``reason``."""
        self.result.rejected[reason] += 1
        if self._file is None:
            self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit() / __exit__
        self._file.write(line)
        self._hash.update(line)

    def commit(self, sync: bool) -> None:
        """Close, sync (``sync``) and rename the part; its sha256 goes into the result (``NO_PART``:
        nothing was rejected, and no file is written)."""
        self.result.quarantine_sha256 = self._hash.hexdigest()
        if self._file is not None:
            self._file.close()
            atomic_replace(self.tmp, self.path, sync=sync)


def duplicate_rejection(source: str, line: int, rid: str, raw: bytes, first: str) -> Rejection:
    """The quarantine line of a record ``dedupe: exact`` drops: a later copy of the row ``first``."""
    return Rejection("duplicate", f"exact duplicate of {first}", "dedupe", source, line, rid, "", original_text(raw),
                     extra={"duplicate_of": first})


class Replay(Protocol):
    """A chunk's records as a first pass left them after rendering (``process.rendered.Rendered``)."""

    digest: str  # of the chunk's input bytes, taken by that pass

    def replay(self, proc: RecordProcessor, quarantine: _Quarantine, sink, drop: dict[int, str]) -> None: ...


def process_chunk(chunk: Chunk, settings: Settings, location: str, processor: RecordProcessor | None = None,
                  drop: dict[int, str] | None = None, run_id: str = "", sync: bool = True,
                  rendered: Replay | None = None) -> ChunkResult:
    """Run every stage over one chunk; commit its shards, quarantine part and done-marker into the
    output ``location`` (a folder, or a pyarrow filesystem URI: written on this machine's staging
    folder and uploaded, the done-marker last). ``drop``: line numbers of this chunk -> the id they
    duplicate (``dedupe: exact``). ``sync=False``: renamed into place without waiting for the disk;
    the run's commit syncs them all at once and ``--resume`` checks them by content. ``rendered``:
    the chunk's records as the first pass of ``dedupe: exact`` rendered them (``process.rendered``):
    only what comes after rendering is done here, to the same bytes."""
    proc = processor or RecordProcessor(settings)
    folder = Folder(location)
    work_dir(folder)
    result = ChunkResult(chunk.index, run_id=run_id,
                         input_digest=rendered.digest if rendered is not None else chunk_digest(chunk))
    packer = Packer(settings.max_length) if settings.packing == "bfd" else None
    schema = BASE_SCHEMA if packer is None else PACKED_SCHEMA
    with ShardWriter(folder.staging(), chunk.index, settings.shard_size, schema, sync=sync) as writer, \
            contextlib.nullcontext() if packer is None else packer, \
            _QuarantinePart(chunk, result, folder.staging() / chunk_quarantine(chunk.index)) as quarantine:
        sink = writer if packer is None else packer
        if rendered is None:
            _records(chunk, settings, proc, quarantine, sink, drop or {})
        else:
            rendered.replay(proc, quarantine, sink, drop or {})
        if packer is not None:
            packer.write(writer)
        result.shards = writer.finish()
        fault_point("worker_chunk")
        quarantine.commit(sync)
    # The done-marker is written last: its presence is what --resume trusts.
    marker = chunk_marker(chunk.index)
    atomic_write_bytes(folder.staging() / marker, orjson.dumps(result.to_json()), sync=sync)
    folder.publish_staged([*result.files(), marker])
    return result


def _records(chunk: Chunk, settings: Settings, proc: RecordProcessor, quarantine: _Quarantine, sink,
             drop: dict[int, str]) -> None:
    """Every record of the chunk from its input: quarantined, dropped or written to ``sink``."""
    result, blanks = quarantine.result, BlankCounter()
    for line, raw, rid, outcome in validated(chunk, settings, proc, blanks):
        result.records_read += 1
        if isinstance(outcome, Rejection):
            quarantine.add(outcome)
            continue
        if outcome.unknown_keys:
            count_names(result.unknown_keys, outcome.unknown_keys)
        conversation(outcome, line, raw, rid, proc, quarantine, sink, drop.get(line))
    result.blank_lines = blanks.value


def conversation(conv: Conversation, line: int, raw: bytes, rid: str | None, proc: RecordProcessor,
                 quarantine: _Quarantine, sink, first: str | None, hashes: tuple[str, str] | None = None) -> None:
    """A valid conversation: dropped as a later copy of ``first`` (``dedupe: exact``), quarantined
    (its rendering or encoding failed) or written to ``sink``. ``hashes``: its content and prompt
    hashes, where they are known."""
    result = quarantine.result
    if first is not None:
        result.dropped_duplicates.append((conv.id, first))
        quarantine.add(duplicate_rejection(quarantine.chunk.name, line, conv.id, raw, first))
        return
    try:
        enc = proc.encode(conv)
        h, ph = hashes or conversation_hashes(conv)
    except RUN_FAULTS:
        raise
    except Exception as exc:  # noqa: BLE001 - no record may stop a run; keep it with a reason
        quarantine.add_exc(exc, "label", line, rid, raw)
        return
    sink.add(conv.id, enc.input_ids, enc.labels, h, ph)
    result.records_written += 1
    result.tokens += len(enc.input_ids)
    result.trained_tokens += enc.trained
    result.special_text_records += conv.has_special_text
    result.hashes.append((h, conv.id))
    if enc.truncated:
        result.truncated_ids.append(conv.id)


def hash_chunk(chunk: Chunk, settings: Settings, processor: RecordProcessor | None = None
               ) -> list[tuple[int, str, str]]:
    """(line, content hash, id) of every valid record of a chunk: the first pass of ``dedupe: exact``."""
    proc = processor or RecordProcessor(settings)
    return [(line, conversation_hashes(conv)[0], conv.id)
            for line, _raw, _rid, conv in validated(chunk, settings, proc) if isinstance(conv, Conversation)]


def validate_chunk(chunk: Chunk, settings: Settings) -> Iterator[tuple[int, Rejection | None, tuple[str, ...]]]:
    """Stages read + parse + adapt + validate only (the tokenizer is never loaded): what
    `sftdata validate` runs. Yields (line, rejection or None, unknown-key names) for every record."""
    proc = RecordProcessor(settings)
    for line, _raw, _rid, outcome in validated(chunk, settings, proc):
        if isinstance(outcome, Rejection):
            yield line, outcome, ()
        else:
            yield line, None, outcome.unknown_keys


def clean_chunk_leftovers(location: str, index: int) -> None:
    """Remove everything an earlier attempt of chunk ``index`` may have left (a Ray retry).

    The published done-marker goes first, so that a marker never outlives the shards it vouches
    for even if this cleanup itself is interrupted. Other chunks' files are never touched: every
    name removed carries this chunk's number (temporary files of other chunks are left alone too).
    Shards an earlier attempt uploaded are overwritten by this one's, which has the same names and
    bytes (chunks are deterministic).
    """
    folder = Folder(location)
    if folder.remote:
        folder.delete(chunk_marker(index))
    staged = Folder(str(folder.staging()))
    names = sorted((n for n in staged.listing() if _of_chunk(n, index)), key=lambda n: n != chunk_marker(index))
    for name in names:
        staged.delete(name)


def _of_chunk(name: str, index: int) -> bool:
    target = temp_target(name) or name
    return shard_chunk(name) == index or target in (chunk_marker(index), chunk_quarantine(index))
