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
_EMPTY = np.zeros(0, dtype=np.int32)


def settings_key(settings: Settings) -> str:
    """What the staged rows were made with (a dataclass: its repr lists every field)."""
    return hashlib.sha256(repr(settings).encode()).hexdigest()


class RowsWriter:
    """Collects a chunk's outcomes in input order, column by column; ``write`` stores them (temp
    file, then rename)."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {f.name: [] for f in ROWS_SCHEMA}

    def _add(self, kind: int, line: int, reason: str, quarantine: bytes, raw: bytes, rid: str,
             unknown: list[str], special: int = 0, hashes: tuple[str, str] = ("", ""), ids=_EMPTY, labels=_EMPTY,
             trained: int = 0, truncated: int = 0) -> None:
        values = (kind, line, reason, quarantine, raw, rid, unknown, special, *hashes, ids, labels, trained, truncated)
        for column, value in zip(self.columns.values(), values, strict=True):
            column.append(value)

    def rejected(self, line: int, rejection: Rejection) -> None:
        self._add(REJECTED, line, rejection.reason, orjson.dumps(rejection.to_json()), b"", "", [])

    def failed(self, line: int, raw: bytes, conv: Conversation, exc: Exception, source: str) -> None:
        r = reject_of(exc)
        rejection = Rejection(r.reason, r.message, "label", source, line, conv.id, r.pointer, original_text(raw))
        self._add(FAILED, line, r.reason, orjson.dumps(rejection.to_json()), raw, conv.id,
                  list(conv.unknown_keys or ()))

    def encoded(self, line: int, raw: bytes, conv: Conversation, enc, hashes: tuple[str, str]) -> None:
        self._add(ENCODED, line, "", b"", raw, conv.id, list(conv.unknown_keys or ()),
                  int(bool(conv.has_special_text)), hashes, enc.input_ids, enc.labels, enc.trained,
                  int(bool(enc.truncated)))

    def write(self, path: Path, digest: str, key: str, blank_lines: int) -> None:
        n = len(self.columns["kind"])
        arrays = []
        for f in ROWS_SCHEMA:
            values = self.columns[f.name]
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


def _lists(parts: list[np.ndarray]) -> pa.ListArray:
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(parts).astype(np.int32, copy=False) if parts else _EMPTY
    return pa.ListArray.from_arrays(_int32_array(offsets), _int32_array(values))


def rows_path(location: str, index: int) -> Path:
    """Where chunk ``index``'s staged rows of the folder at ``location`` are (this machine's staging)."""
    return Folder(location).staging() / chunk_rows(index)


@dataclass
class Staged:
    """A chunk's staged rows as the main pass reads them: the table (memory-mapped) and, as numpy
    arrays, the columns every row is routed by."""

    table: pa.Table
    blank_lines: int
    kind: np.ndarray
    line: np.ndarray

    def value(self, name: str, i: int):
        """One cell (for the few rows written one by one: rejections, drops)."""
        return self.table.column(name)[i].as_py()

    def numbers(self, name: str) -> np.ndarray:
        return _numbers(self.table.column(name))

    def offsets(self, name: str) -> np.ndarray:
        """A list column's offsets (row ``i``'s items are ``offsets[i]:offsets[i + 1]``)."""
        return _offsets(self.table.column(name))

    def lists(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A list column of numbers as (offsets, values)."""
        return self.offsets(name), _numbers(_values(self.table.column(name)))

    def strings(self, name: str) -> list:
        return self.table.column(name).to_pylist()


def read_rows(location: str, index: int, digest: str, key: str) -> Staged | None:
    """A chunk's staged rows, or None when absent, unreadable or made from other input bytes or
    settings (the main pass then processes the chunk from its input)."""
    try:
        with pa.memory_map(str(rows_path(location, index))) as source:
            reader = pa.ipc.open_file(source)
            meta = reader.schema.metadata or {}
            if meta.get(b"digest") != digest.encode() or meta.get(b"settings") != key.encode():
                return None
            table = pa.Table.from_batches([reader.get_batch(i) for i in range(reader.num_record_batches)],
                                          schema=reader.schema).combine_chunks()
            staged = Staged(table, int(meta[b"blank_lines"]), _numbers(table.column("kind")),
                            _numbers(table.column("line")))
    except RUN_FAULTS:
        return None
    except (pa.ArrowException, KeyError, ValueError):
        return None
    return staged


_DTYPES = {pa.int32(): np.int32, pa.int64(): np.int64}


def _chunk(col: pa.ChunkedArray) -> pa.Array | None:
    return col.chunk(0) if col.num_chunks else None


def _numbers(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A primitive column's values, from its buffer (``to_numpy`` would import pandas)."""
    arr = _chunk(col) if isinstance(col, pa.ChunkedArray) else col
    dtype = np.dtype(_DTYPES[arr.type] if arr is not None else np.int32)
    if arr is None or not len(arr):
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def _offsets(col: pa.ChunkedArray) -> np.ndarray:
    arr = _chunk(col)
    if arr is None:
        return np.zeros(1, dtype=np.int32)
    return np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)


def _values(col: pa.ChunkedArray) -> pa.Array | None:
    arr = _chunk(col)
    return arr.values if arr is not None else None
