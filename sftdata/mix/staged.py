"""A mix's staged rows: the first pass processes every record once (parse, adapt, validate, render,
encode) and keeps the outcome of each, in input order, in ``_chunks/chunk-C.rows.arrow``
(``storage.layout.chunk_rows``); the main pass writes the routed ones from there, without parsing
or encoding again.

Why a file per chunk: a mix learns which records it takes only after the first pass has seen every
source, and encoding is most of a record's cost, so the first pass keeps what it computed. A row
is one ``validated`` outcome: a rejection (its quarantine line), a conversation whose encoding
failed (its ``label`` quarantine line) or an encoded conversation (ids, labels, hashes and what the
main pass counts). The file is written under a temporary name and renamed (its own done-marker),
and it names the chunk's input digest and the settings it was made with: the main pass trusts it
only when both match, and otherwise processes the chunk from its input (same bytes, slower).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from sftdata.config import Settings
from sftdata.process.record import RUN_FAULTS, original_text, reject_of
from sftdata.stages.records import Conversation, Rejection
from sftdata.stages.write.arrow import _int32_array, _string_array, _string_list_array
from sftdata.storage import Folder
from sftdata.storage.atomic import atomic_replace, temp_path
from sftdata.storage.layout import chunk_rows

REJECTED, FAILED, ENCODED = 0, 1, 2  # a row's kind

ROWS_SCHEMA = pa.schema([
    ("kind", pa.int32()), ("line", pa.int64()), ("reason", pa.string()), ("quarantine", pa.large_binary()),
    ("raw", pa.large_binary()), ("id", pa.string()), ("unknown_keys", pa.list_(pa.string())),
    ("special", pa.int32()), ("content_hash", pa.string()), ("prompt_hash", pa.string()),
    ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())), ("trained", pa.int32()),
    ("truncated", pa.int32()),
])  # built from buffers, never with ``pa.array`` (it imports pandas: a fraction of a second per worker)
_LISTS = ("input_ids", "labels")


def settings_key(settings: Settings) -> str:
    """What the staged rows were made with (a dataclass: its repr lists every field)."""
    return hashlib.sha256(repr(settings).encode()).hexdigest()


@dataclass
class StagedRow:
    """One ``validated`` outcome as the main pass reads it back."""

    kind: int
    line: int
    reason: str | None
    quarantine: bytes | None
    raw: bytes
    id: str | None
    unknown_keys: list[str]
    has_special_text: bool
    content_hash: str | None
    prompt_hash: str | None
    input_ids: np.ndarray
    labels: np.ndarray
    trained: int
    truncated: bool


class RowsWriter:
    """Collects a chunk's outcomes in input order; ``write`` stores them (temp file, then rename)."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []  # in ROWS_SCHEMA's order

    def rejected(self, line: int, rejection: Rejection) -> None:
        self.rows.append((REJECTED, line, rejection.reason, orjson.dumps(rejection.to_json()), b"", "", [], 0,
                          "", "", _EMPTY, _EMPTY, 0, 0))

    def failed(self, line: int, raw: bytes, conv: Conversation, exc: Exception, source: str) -> None:
        r = reject_of(exc)
        rejection = Rejection(r.reason, r.message, "label", source, line, conv.id, r.pointer, original_text(raw))
        self.rows.append((FAILED, line, r.reason, orjson.dumps(rejection.to_json()), raw, conv.id,
                          list(conv.unknown_keys or ()), 0, "", "", _EMPTY, _EMPTY, 0, 0))

    def encoded(self, line: int, raw: bytes, conv: Conversation, enc, hashes: tuple[str, str]) -> None:
        self.rows.append((ENCODED, line, "", b"", raw, conv.id, list(conv.unknown_keys or ()),
                          int(bool(conv.has_special_text)), hashes[0], hashes[1], enc.input_ids, enc.labels,
                          enc.trained, int(bool(enc.truncated))))

    def write(self, path: Path, digest: str, key: str, blank_lines: int) -> None:
        n = len(self.rows)
        arrays = []
        columns = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(ROWS_SCHEMA)
        for f, values in zip(ROWS_SCHEMA, columns, strict=True):
            values = list(values)
            if f.name in _LISTS:
                arrays.append(_lists(values))
            elif pa.types.is_list(f.type):
                arrays.append(_string_list_array(values))
            elif pa.types.is_string(f.type):
                arrays.append(_string_array(values))
            elif pa.types.is_large_binary(f.type):
                arrays.append(_binary_array(values))
            else:
                dtype = np.int64 if f.type == pa.int64() else np.int32
                arrays.append(pa.Array.from_buffers(f.type, n, [None, pa.py_buffer(np.array(values, dtype=dtype))]))
        schema = ROWS_SCHEMA.with_metadata({"digest": digest, "settings": key, "blank_lines": str(blank_lines)})
        batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_batch(batch)
        atomic_replace(tmp, path, sync=False)  # rewritten by every run's first pass: never resumed from


def _binary_array(values: list[bytes]) -> pa.Array:
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)), out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), len(values),
                                [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


_EMPTY = np.zeros(0, dtype=np.int32)


def _lists(parts: list[np.ndarray]) -> pa.ListArray:
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(parts).astype(np.int32, copy=False) if parts else _EMPTY
    return pa.ListArray.from_arrays(_int32_array(offsets), _int32_array(values))


def rows_path(location: str, index: int) -> Path:
    """Where chunk ``index``'s staged rows of the folder at ``location`` are (this machine's staging)."""
    return Folder(location).staging() / chunk_rows(index)


def read_rows(location: str, index: int, digest: str, key: str) -> tuple[list[StagedRow], int] | None:
    """A chunk's staged rows and blank lines, or None when absent, unreadable or made from other
    input bytes or settings (the main pass then processes the chunk from its input)."""
    try:
        with pa.memory_map(str(rows_path(location, index))) as source:
            reader = pa.ipc.open_file(source)
            meta = reader.schema.metadata or {}
            if meta.get(b"digest") != digest.encode() or meta.get(b"settings") != key.encode():
                return None
            batch = pa.Table.from_batches([reader.get_batch(i) for i in range(reader.num_record_batches)],
                                          schema=reader.schema).combine_chunks()
            blank_lines = int(meta[b"blank_lines"])
            rows = _rows(batch)
    except RUN_FAULTS:
        return None
    except (pa.ArrowException, KeyError, ValueError):
        return None
    return rows, blank_lines


def _split(col: pa.ChunkedArray) -> list[np.ndarray]:
    arr = col.chunk(0) if col.num_chunks else pa.array([], type=col.type)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    values = arr.values
    flat = np.frombuffer(values.buffers()[1], dtype=np.int32, count=len(values), offset=values.offset * 4).copy() \
        if len(values) else _EMPTY
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(arr))]


def _rows(table: pa.Table) -> list[StagedRow]:
    c = {name: table.column(name).to_pylist() for name in table.column_names
         if name not in ("input_ids", "labels")}
    ids, labels = _split(table.column("input_ids")), _split(table.column("labels"))
    return [StagedRow(c["kind"][i], c["line"][i], c["reason"][i], c["quarantine"][i], c["raw"][i], c["id"][i],
                      c["unknown_keys"][i], bool(c["special"][i]), c["content_hash"][i], c["prompt_hash"][i],
                      ids[i], labels[i], c["trained"][i], bool(c["truncated"][i]))
            for i in range(table.num_rows)]

