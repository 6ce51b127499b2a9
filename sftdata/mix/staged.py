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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from sftdata.config import Settings
from sftdata.constants import IGNORE_INDEX
from sftdata.process.chunk import exc_rejection
from sftdata.process.record import RUN_FAULTS
from sftdata.stages.records import Conversation, Rejection
from sftdata.stages.write.arrow import _int32_array, plain_array
from sftdata.storage import Folder
from sftdata.storage.atomic import publish_scratch, temp_path
from sftdata.storage.layout import chunk_rows
from sftdata.version import __version__

REJECTED, FAILED, ENCODED = 0, 1, 2  # a row's kind

ROWS_SCHEMA = pa.schema([
    ("kind", pa.int32()), ("line", pa.int64()), ("reason", pa.string()), ("quarantine", pa.large_binary()),
    ("raw", pa.large_binary()), ("id", pa.string()), ("unknown_keys", pa.list_(pa.string())),
    ("special", pa.int32()), ("content_hash", pa.string()), ("prompt_hash", pa.string()),
    ("input_ids", pa.list_(pa.int32())), ("trained_mask", pa.list_(pa.uint8())), ("trained", pa.int32()),
    ("truncated", pa.int32()), ("chars", pa.int64()),
])  # built from buffers, never with ``pa.array`` (it imports pandas: a fraction of a second per worker)
# ``trained_mask``: 1 where a token is trained; the labels are the ids there and IGNORE_INDEX elsewhere
# (``stages.encode``), so a token costs 5 bytes here instead of 8
_EMPTY = np.zeros(0, dtype=np.int32)


def settings_key(settings: Settings, raw: bool = True) -> str:
    """What the staged rows were made with (a dataclass: its repr lists every field), and whether
    they keep each record's original line (``raw``: only a mix that can drop valid records needs it,
    for the quarantine line of a duplicate or a contaminated record)."""
    return hashlib.sha256(f"{settings!r}:raw={raw}:{__version__}".encode()).hexdigest()


class RowsWriter:
    """Collects a chunk's outcomes in input order, a list per column (the columns of rejections and
    failures only where there are some); ``write`` stores them (temp file, then rename). ``raw``:
    keep each record's original line (else b"")."""

    def __init__(self, raw: bool = True) -> None:
        self.raw = raw
        self.kind: list[int] = []
        self.line: list[int] = []
        self.ids: list[str] = []
        self.hashes: list[str] = []
        self.prompts: list[str] = []
        self.tokens: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.lengths: list[int] = []
        self.special: list[int] = []
        self.trained: list[int] = []
        self.truncated: list[int] = []
        self.sparse: dict[str, dict[int, object]] = {name: {} for name in _SPARSE}  # row -> value, else empty

    def _row(self, kind: int, line: int, rid: str, hashes: tuple[str, str], raw: bytes, unknown) -> int:
        i = len(self.kind)
        self.kind.append(kind)
        self.line.append(line)
        self.ids.append(rid)
        self.hashes.append(hashes[0])
        self.prompts.append(hashes[1])
        if raw and self.raw:
            self.sparse["raw"][i] = raw
        if unknown:
            self.sparse["unknown_keys"][i] = list(unknown)
        return i

    def _not_encoded(self, i: int, reason: str, quarantine: bytes) -> None:
        self.sparse["reason"][i] = reason
        self.sparse["quarantine"][i] = quarantine
        self.tokens.append(_EMPTY)
        self.labels.append(_EMPTY)
        self.lengths.append(0)
        self.special.append(0)
        self.trained.append(0)
        self.truncated.append(0)

    def rejected(self, line: int, rejection: Rejection) -> None:
        i = self._row(REJECTED, line, "", ("", ""), b"", None)
        self._not_encoded(i, rejection.reason, orjson.dumps(rejection.to_json()))

    def failed(self, line: int, raw: bytes, conv: Conversation, exc: Exception, source: str, chars: int,
               hashes: tuple[str, str]) -> None:
        """A conversation whose rendering or encoding failed; ``chars``: its rendered characters (-1:
        not rendered), ``hashes`` where it is a fact all the same (``ScanChunk``)."""
        rejection = exc_rejection(exc, "label", source, line, conv.id, raw)
        i = self._row(FAILED, line, conv.id, hashes, raw, conv.unknown_keys)
        self._not_encoded(i, rejection.reason, orjson.dumps(rejection.to_json()))
        self.sparse["chars"][i] = chars

    def encoded(self, line: int, raw: bytes, conv: Conversation, enc, hashes: tuple[str, str]) -> None:
        self._row(ENCODED, line, conv.id, hashes, raw, conv.unknown_keys)
        self.tokens.append(enc.input_ids)
        self.labels.append(enc.labels)
        self.lengths.append(len(enc.input_ids))
        self.special.append(1 if conv.has_special_text else 0)
        self.trained.append(enc.trained)
        self.truncated.append(1 if enc.truncated else 0)

    def _columns(self) -> dict[str, pa.Array]:
        n = len(self.kind)
        lengths = np.array(self.lengths, dtype=np.int64)
        columns = {name: plain_array(ROWS_SCHEMA.field(name).type, values) for name, values in (
            ("kind", self.kind), ("line", self.line), ("id", self.ids), ("content_hash", self.hashes),
            ("prompt_hash", self.prompts), ("special", self.special), ("trained", self.trained),
            ("truncated", self.truncated))}
        for name, values in self.sparse.items():
            kind = ROWS_SCHEMA.field(name).type
            columns[name] = plain_array(kind, [values.get(i, _SPARSE[name]) for i in range(n)]) if values else \
                _empty_column(kind, n)
        columns["input_ids"] = _lists(self.tokens, lengths, np.int32)
        columns["trained_mask"] = _lists(self.labels, lengths, np.uint8, lambda flat: flat != IGNORE_INDEX)
        return columns

    def write(self, path: Path, digest: str, key: str, blank_lines: int) -> Staged:
        """Store the rows; returns them as ``read_rows`` would read them back."""
        columns = self._columns()
        schema = ROWS_SCHEMA.with_metadata({"digest": digest, "settings": key, "blank_lines": str(blank_lines)})
        batch = pa.RecordBatch.from_arrays([columns[f.name] for f in ROWS_SCHEMA], schema=schema)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_batch(batch)
        publish_scratch(tmp, path)
        table = pa.Table.from_batches([batch])
        staged = Staged(table, blank_lines, _numbers(table.column("kind")), _numbers(table.column("line")))
        staged._memo.update({"id": self.ids, "content_hash": self.hashes, "prompt_hash": self.prompts})  # as read
        return staged


_SPARSE = {"reason": "", "quarantine": b"", "raw": b"", "unknown_keys": [], "chars": 0}  # most rows' values


def _empty_column(kind: pa.DataType, n: int) -> pa.Array:
    """``n`` empty strings, bytes or lists, or zeros, of ``kind`` (no Python value per row)."""
    if pa.types.is_large_binary(kind):
        return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(np.zeros(n + 1, dtype=np.int64)), pa.py_buffer(b"")])
    if pa.types.is_string(kind):
        return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(np.zeros(n + 1, dtype=np.int32)), pa.py_buffer(b"")])
    if pa.types.is_list(kind):
        return pa.ListArray.from_arrays(_int32_array(np.zeros(n + 1, dtype=np.int32)), plain_array(kind.value_type, []))
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(np.zeros(n, dtype=np.int64 if kind == pa.int64() else np.int32))])


def _lists(parts: list[np.ndarray], lengths: np.ndarray, dtype, convert=None) -> pa.ListArray:
    """One list column of ``parts`` (``lengths``: theirs; ``convert``: applied to their concatenation)."""
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(parts) if parts else _EMPTY
    values = (convert(flat) if convert is not None else flat).astype(dtype, copy=False)
    kind = pa.int32() if dtype == np.int32 else pa.uint8()
    return pa.ListArray.from_arrays(_int32_array(offsets), pa.Array.from_buffers(kind, len(values),
                                                                                  [None, pa.py_buffer(values)]))


def rows_path(location: str, index: int) -> Path:
    """Where chunk ``index``'s staged rows of the folder at ``location`` are (this machine's staging)."""
    return Folder(location).staging() / chunk_rows(index)


def remove_rows(location: str, chunks: list) -> None:
    """Remove the staged rows of ``chunks`` (once written, or after a refusal)."""
    for c in chunks:
        rows_path(location, c.index).unlink(missing_ok=True)


@dataclass
class Staged:
    """A chunk's staged rows as the passes read them: the table (memory-mapped, or the one just
    written) and, as numpy arrays, the columns every row is routed by."""

    table: pa.Table
    blank_lines: int
    kind: np.ndarray
    line: np.ndarray
    _memo: dict = field(default_factory=dict)  # the columns read so far (each split's rows read them)

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

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """The labels as (offsets, values): each token's id where it is trained, else IGNORE_INDEX."""
        if "labels" not in self._memo:
            offsets, ids = self.lists("input_ids")
            mask = _numbers(_values(self.table.column("trained_mask")))
            self._memo["labels"] = offsets, np.where(mask.astype(bool), ids, np.int32(IGNORE_INDEX)).astype(np.int32)
        return self._memo["labels"]

    def text(self, name: str) -> Text:
        key = ("text", name)
        if key not in self._memo:
            self._memo[key] = Text(self.table.column(name))
        return self._memo[key]

    def strings(self, name: str) -> list:
        if name not in self._memo:
            self._memo[name] = self.table.column(name).to_pylist()
        return self._memo[name]


def item_picks(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The offsets of ``rows``' lists (a list or string column's ``offsets``) one after the other,
    and where each of their items is in the column's values."""
    starts = offsets[rows].astype(np.int64)
    lengths = offsets[rows + 1] - starts
    out = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=out[1:])
    return out, np.repeat(starts - out[:-1], lengths) + np.arange(int(out[-1]))


class Text:
    """A string column as numpy arrays: ``offsets`` (row ``i``'s UTF-8 bytes are
    ``data[offsets[i]:offsets[i + 1]]``) and ``data``."""

    def __init__(self, col: pa.ChunkedArray) -> None:
        arr = _chunk(col)
        if arr is None:
            self.offsets, self.data = np.zeros(1, dtype=np.int32), np.zeros(0, dtype=np.uint8)
        else:
            self.offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
            data = arr.buffers()[2]
            self.data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
        self.ascii = not len(self.data) or int(self.data.max()) < 0x80

    def take(self, rows: np.ndarray) -> pa.Array:
        """Rows ``rows`` as a string column built as ``stages.write.arrow._string_array`` builds one."""
        out, picks = item_picks(self.offsets, rows)
        return pa.StringArray.from_buffers(len(rows), pa.py_buffer(out), pa.py_buffer(self.data[picks]))

    def string(self, i: int) -> str:
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8")


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


_DTYPES = {pa.int32(): np.int32, pa.int64(): np.int64, pa.uint8(): np.uint8}


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
