"""``dedupe: exact`` without parsing twice: the first pass renders every record of a chunk and keeps
the result; the main pass encodes and writes from it.

Why: whether a record is a later copy depends on every chunk before it, so the decision needs a
pass over the whole input before any row is written, and that pass must parse, adapt and validate
every record to hash its normalised content. The main pass used to do all of that again. Now the
first pass (``render_chunk``) keeps what it computed up to rendering, per record and in input
order: its quarantine line (rejected while read or validated, or its rendering failed) or its
rendered pieces, with its line, ids, original text and hashes. They go to
``_chunks/chunk-C.rendered.arrow`` in batches of about ``BATCH_BYTES`` (the worker never holds a
whole chunk), and ``chunk-C.rendered.json`` is written after it: this run's attempt, the chunk's
input digest and counts, the Arrow file's size. The main pass (``process_chunk`` with
``rendered``) trusts the pair only when the marker names its attempt and the size matches; it then
does what follows rendering, in the same order and with the same functions (the duplicate check,
encoding, truncation, writing), so the bytes are those two full passes wrote. Encoding, most of a
record's cost, happens once, and never for a dropped copy.

A record's original bytes (for its quarantine line, should it be dropped or fail) are kept only
where the main pass cannot read them back from the input: a local JSON Lines chunk is a byte range
of a file, so its lines are found again by line number (``InputLines``), and the files then take
about the input's size (its rendered text); else about twice that. Each chunk's main pass removes
its own. A chunk whose rendered records are missing or of another attempt (a Ray task on another
machine) is processed from its input: the same bytes, the old cost.
"""

from __future__ import annotations

import contextlib
import marshal
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pyarrow as pa

from sftdata.process.chunk import _Quarantine, conversation, exc_rejection, quarantine_line
from sftdata.process.record import RUN_FAULTS, BlankCounter, RecordProcessor, conversation_hashes, validated
from sftdata.stages.adapt.keys import count_names
from sftdata.stages.read.jsonl import BOM, Chunk
from sftdata.stages.records import Conversation
from sftdata.stages.write.arrow import plain_array
from sftdata.storage.atomic import atomic_write_bytes, publish_scratch, temp_path
from sftdata.storage.layout import chunk_rendered, chunk_rendered_marker
from sftdata.storage.opener import map_regular, open_regular, release_pages
from sftdata.storage.uri import is_uri

REJECTED, FAILED, RENDERED = 0, 1, 2  # a record's kind: ``data`` is its quarantine line, or its pieces
SPECIAL, NO_RID = 1, 2  # flags: the text holds special-token text; the record had no id of its own
BATCH_BYTES = 4 << 20

SCHEMA = pa.schema([("kind", pa.int32()), ("flags", pa.int32()), ("line", pa.int64()), ("rid", pa.string()),
                    ("id", pa.string()), ("reason", pa.string()), ("content_hash", pa.string()),
                    ("prompt_hash", pa.string()), ("raw", pa.large_binary()), ("data", pa.large_binary())])


class _Writer:
    """A chunk's rendered records, appended in input order and written a batch at a time."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, temp_path(path)
        self._rows: list[tuple] = []
        self._bytes = 0
        self._sink = self._writer = None

    def add(self, kind: int, flags: int, line: int, rid: str | None, cid: str, reason: str,
            hashes: tuple[str, str], raw: bytes, data: bytes) -> None:
        self._rows.append((kind, flags, line, rid or "", cid, reason, *hashes, raw, data))
        self._bytes += len(raw) + len(data)
        if self._bytes >= BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            self._sink = pa.OSFile(str(self.tmp), "wb")
            self._writer = pa.ipc.new_file(self._sink, SCHEMA)
        columns = zip(*self._rows, strict=True) if self._rows else [()] * len(SCHEMA)
        arrays = [plain_array(f.type, list(values)) for f, values in zip(SCHEMA, columns, strict=True)]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=SCHEMA))
        self._rows, self._bytes = [], 0

    def close(self) -> int:
        """Write what is left and rename the file into place; returns its size."""
        self._flush()
        self._writer.close()
        self._sink.close()
        publish_scratch(self.tmp, self.path)
        return self.path.stat().st_size

    def abort(self) -> None:
        if self._sink is not None:
            self._sink.close()
        self.tmp.unlink(missing_ok=True)


def render_chunk(chunk: Chunk, processor: RecordProcessor, staging: Path, attempt: str, digest: str
                 ) -> list[tuple[int, str, str]]:
    """The first pass over ``chunk``: every record read, validated, hashed and rendered, kept in
    ``staging`` for the main pass (``Rendered``). Returns (line, content hash, id) of every valid
    record: what ``process.dedupe.hash_run`` makes the chunk's run of. Nothing is synced: the files
    serve this attempt only, so after a crash they are not trusted anyway."""
    writer, blanks = _Writer(staging / chunk_rendered(chunk.index)), BlankCounter()
    keep_raw = not lines_in_input(chunk)  # else the main pass reads a quarantined record's line back
    unknown: Counter = Counter()
    run: list[tuple[int, str, str]] = []
    records = 0
    try:
        for line, raw, rid, conv in validated(chunk, processor.settings, processor, blanks):
            records += 1
            if not isinstance(conv, Conversation):
                writer.add(REJECTED, 0, line, rid, "", conv.reason, ("", ""), b"", quarantine_line(conv))
                continue
            if conv.unknown_keys:
                count_names(unknown, conv.unknown_keys)
            hashes = conversation_hashes(conv)
            run.append((line, hashes[0], conv.id))
            flags = SPECIAL * bool(conv.has_special_text) | NO_RID * (rid is None)
            try:
                pieces = conv.pieces if conv.pieces is not None else processor.renderer.render(conv)
                kind, reason, data = RENDERED, "", marshal.dumps(pieces)
            except RUN_FAULTS:
                raise
            except Exception as exc:  # noqa: BLE001 - its quarantine line, unless it is dropped as a copy
                rejection = exc_rejection(exc, "label", chunk.name, line, rid, raw)
                kind, reason, data = FAILED, rejection.reason, quarantine_line(rejection)
            writer.add(kind, flags, line, rid, conv.id, reason, hashes, raw if keep_raw else b"", data)
        size = writer.close()
    except BaseException:
        writer.abort()
        raise
    marker = {"attempt": attempt, "digest": digest, "bytes": size, "records_read": records,
              "blank_lines": blanks.value, "unknown_keys": dict(unknown), "raw": keep_raw}
    atomic_write_bytes(staging / chunk_rendered_marker(chunk.index), orjson.dumps(marker), sync=False)
    return run


_LISTED = [name for name in SCHEMA.names if name != "raw"]


class _Raw:
    """A record's original bytes, read (from its batch, or its input line) only when its quarantine
    line is made (``original_text`` decodes them): most records are written, and a row never needs them."""

    __slots__ = ("source", "key")

    def __init__(self, source: pa.Array | InputLines, key: int) -> None:
        self.source, self.key = source, key

    def decode(self, encoding: str, errors: str) -> str:
        raw = self.source[self.key]
        return (raw if isinstance(raw, bytes) else raw.as_py()).decode(encoding, errors)


def lines_in_input(chunk: Chunk) -> bool:
    """Whether the main pass can read a record's line back from the input (a local JSON Lines
    chunk: a byte range of a file), so the first pass need not keep every record's bytes (about
    half of what it writes)."""
    return chunk.kind == "jsonl" and not is_uri(chunk.path)


class InputLines:
    """The lines of a local JSON Lines chunk by line number, as the reader gave them (without the
    line break, a first line without its byte-order mark): the chunk's line starts are found once,
    reading it a block at a time, and each line asked for is read with ``pread`` (nothing of the
    input stays in the worker's memory)."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self._file = None
        self._starts: np.ndarray | None = None

    def _index(self) -> None:
        self._file = open_regular(self.chunk.path, "input")
        starts, at = [np.array([self.chunk.start], dtype=np.int64)], self.chunk.start
        while at < self.chunk.end:
            block = os.pread(self._file.fileno(), min(_SCAN, self.chunk.end - at), at)
            if not block:
                break
            starts.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10).astype(np.int64) + at + 1)
            at += len(block)
        self._starts = np.concatenate(starts)

    def __getitem__(self, line: int) -> bytes:
        if self._starts is None:
            self._index()
        k = line - self.chunk.first_line
        start = int(self._starts[k])
        end = int(self._starts[k + 1]) if k + 1 < len(self._starts) else self.chunk.end
        data = os.pread(self._file.fileno(), end - start, start).rstrip(b"\r\n")
        return data[len(BOM):] if line == 1 and data.startswith(BOM) else data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


_SCAN = 1 << 20  # bytes of input scanned for line breaks at a time


class Rendered:
    """A chunk's rendered records, read back by its main pass (``process_chunk(rendered=...)``)."""

    def __init__(self, staging: Path, chunk: Chunk, marker: dict) -> None:
        self.path = staging / chunk_rendered(chunk.index)
        self.marker_path = staging / chunk_rendered_marker(chunk.index)
        self.chunk, self.marker = chunk, marker
        self.digest: str = marker["digest"]

    @classmethod
    def open(cls, staging: Path, chunk: Chunk, attempt: str) -> Rendered | None:
        """``chunk``'s rendered records when their marker names ``attempt`` and the file is whole;
        else None (the chunk is then processed from its input)."""
        path = staging / chunk_rendered(chunk.index)
        try:
            marker = orjson.loads((staging / chunk_rendered_marker(chunk.index)).read_bytes())
            if marker.get("attempt") != attempt or path.stat().st_size != marker.get("bytes"):
                return None
        except (OSError, orjson.JSONDecodeError, AttributeError):
            return None
        return cls(staging, chunk, marker)

    def replay(self, proc: RecordProcessor, quarantine: _Quarantine, sink, drop: dict[int, str]) -> None:
        """What ``process_chunk`` does after rendering, for every record in input order."""
        result = quarantine.result
        result.records_read, result.blank_lines = self.marker["records_read"], self.marker["blank_lines"]
        result.unknown_keys = Counter(self.marker["unknown_keys"])
        lines = None if self.marker["raw"] else InputLines(self.chunk)
        try:
            for cols, raws in self._batches():
                for i, (kind, flags, line, rid, cid, reason, h, ph, data) in enumerate(zip(*cols, strict=True)):
                    first = drop.get(line) if kind != REJECTED else None
                    if kind == REJECTED or (kind == FAILED and first is None):
                        quarantine.add_line(data, reason)
                        continue
                    conv = SimpleNamespace(id=cid, has_special_text=bool(flags & SPECIAL),
                                           pieces=marshal.loads(data) if kind == RENDERED else None)
                    raw = _Raw(raws, i) if lines is None else _Raw(lines, line)
                    conversation(conv, line, raw, None if flags & NO_RID else rid, proc, quarantine, sink, first, (h, ph))
        finally:
            if lines is not None:
                lines.close()

    def _batches(self):
        """Each batch's columns as lists, but its original texts as the Arrow column (a record's is
        read only when it is quarantined). The file is mapped and each batch's pages are let go once
        the batch is done, so the worker's resident memory holds one batch, not the whole file."""
        mapped = map_regular(self.path, "rendered records")
        try:
            reader = pa.ipc.open_file(pa.py_buffer(mapped))
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                yield [batch.column(name).to_pylist() for name in _LISTED], batch.column("raw")
                del batch
                release_pages(mapped)
            del reader
        finally:
            if hasattr(mapped, "close"):
                with contextlib.suppress(BufferError):  # a batch still referenced (an error mid-chunk): at exit
                    mapped.close()

    def remove(self) -> None:
        """The marker first: without it, the records file is not trusted."""
        self.marker_path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
