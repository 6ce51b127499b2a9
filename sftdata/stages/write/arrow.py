"""Arrow shard writing with an atomic commit.

A shard is written under a temporary name in the output folder, flushed, fsynced and renamed into
place, so a reader never sees a file that looks complete but is not (``sync=False``: renamed
without the fsync, which the run's commit does for every file at once; see ``storage.atomic``).
Rows are buffered as flat numpy arrays (values + offsets), not Python lists of lists, and a shard
is closed once it reaches ``shard_size`` bytes, so memory stays bounded by the batch size, not the
input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from sftdata.constants import IGNORE_INDEX
from sftdata.storage.atomic import atomic_replace, atomic_write_bytes, fsync_dir, fsync_file, temp_path
from sftdata.storage.hashing import file_sha256
from sftdata.storage.layout import shard_name

BASE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("input_ids", pa.list_(pa.int32())),
    ("labels", pa.list_(pa.int32())),
    ("content_hash", pa.string()),
    ("prompt_hash", pa.string()),
])
MIX_SCHEMA = pa.schema([*BASE_SCHEMA, ("source", pa.string())])  # a mix: every row names its source
BATCH_BYTES = 8 << 20


def row_bytes(tokens, id_chars):
    """What a row adds to a shard writer's buffer (ints, or numpy arrays of them)."""
    return 8 * tokens + id_chars + 48


def _int32_array(a: np.ndarray) -> pa.Array:
    # Straight from the buffer: `pa.array(ndarray)` would import pandas (a second per worker).
    a = np.ascontiguousarray(a, dtype=np.int32)
    return pa.Array.from_buffers(pa.int32(), len(a), [None, pa.py_buffer(a)])


def _string_array(strings: list[str]) -> pa.Array:
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return pa.StringArray.from_buffers(len(encoded), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded)))


def binary_array(values: list[bytes]) -> pa.Array:
    """``values`` as one large_binary column, from buffers."""
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)), out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), len(values),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


def plain_array(kind: pa.DataType, values: list) -> pa.Array:
    """One column of Python values of a string, large_binary, string-list or int32/int64 ``kind``,
    built from buffers (``pa.array`` would import pandas: a fraction of a second per worker)."""
    if pa.types.is_string(kind):
        return _string_array(values)
    if pa.types.is_large_binary(kind):
        return binary_array(values)
    if pa.types.is_list(kind):
        return _string_list_array(values)
    numbers = np.array(values, dtype=np.int64 if kind == pa.int64() else np.int32)
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(numbers)])


def _string_list_array(parts: list[list[str]]) -> pa.Array:
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)), out=offsets[1:])
    return pa.ListArray.from_arrays(_int32_array(offsets), _string_array([s for p in parts for s in p]))


@dataclass
class ShardRecord:
    file: str
    rows: int
    tokens: int
    trained_tokens: int
    bytes: int
    sha256: str

    def to_json(self) -> dict:
        return dict(self.__dict__)


class ShardWriter:
    """Writes one chunk's rows as ``shard-CCCCCC-PP.arrow`` files. Use as a context manager.

    ``finish()`` closes the last shard and returns the committed shard records, in order.
    Leaving the ``with`` block on an exception removes the temporary file of an open shard.
    """

    def __init__(self, out_dir: Path, chunk_index: int, shard_size: int, schema: pa.Schema = BASE_SCHEMA,
                 *, sync: bool = True) -> None:
        self.out_dir = out_dir
        self.sync = sync
        self.chunk_index = chunk_index
        self.shard_size = shard_size
        self.schema = schema
        self.records: list[ShardRecord] = []
        self._part = 0
        self._sink = None
        self._writer = None
        self._tmp: Path | None = None
        self._reset_buffer()
        self._shard_rows = self._shard_tokens = self._shard_trained = self._shard_bytes = 0

    def _reset_buffer(self) -> None:
        self._ids: list[str] = []
        self._hashes: list[str] = []
        self._prompt_hashes: list[str] = []
        self._tok: list[np.ndarray] = []
        self._lab: list[np.ndarray] = []
        self._extra: dict[str, list] = {}
        self._buf_bytes = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def shard_name(self, part: int) -> str:
        return shard_name(self.chunk_index, part)

    def add(self, row_id: str, input_ids: np.ndarray, labels: np.ndarray, content_hash: str, prompt_hash: str,
            **extra: np.ndarray) -> None:
        self._ids.append(row_id)
        self._hashes.append(content_hash)
        self._prompt_hashes.append(prompt_hash)
        self._tok.append(input_ids)
        self._lab.append(labels)
        for key, value in extra.items():
            self._extra.setdefault(key, []).append(value)
        self._buf_bytes += row_bytes(len(input_ids), len(row_id))
        if self._buf_bytes >= self.batch_limit:
            self._flush()

    @staticmethod
    def _list_array(parts: list[np.ndarray], dtype=np.int32, values: np.ndarray | None = None) -> pa.ListArray:
        """``parts`` as one list column; ``values``: their concatenation, when the caller has it."""
        lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        offsets = np.zeros(len(parts) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        if values is None:
            values = np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
        return pa.ListArray.from_arrays(_int32_array(offsets), _int32_array(values))

    def _flush(self) -> None:
        if not self._ids:
            return
        # the labels' values once, for the column and the trained count (not a numpy call per row;
        # the column's own values would do, but pyarrow's to_numpy imports pandas)
        labels = np.concatenate(self._lab).astype(np.int32, copy=False)
        columns = {
            "id": _string_array(self._ids),
            "input_ids": self._list_array(self._tok),
            "labels": self._list_array(self._lab, values=labels),
            "content_hash": _string_array(self._hashes),
            "prompt_hash": _string_array(self._prompt_hashes),
        }
        for key, parts in self._extra.items():
            field = self.schema.field(key)
            if pa.types.is_list(field.type) and pa.types.is_string(field.type.value_type):
                columns[key] = _string_list_array(parts)
            elif pa.types.is_string(field.type):
                columns[key] = _string_array(parts)
            else:
                columns[key] = self._list_array(parts)
        batch = pa.RecordBatch.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)
        tokens = int(sum(len(t) for t in self._tok))
        self._reset_buffer()
        self.write_batch(batch, tokens, int(np.count_nonzero(labels != IGNORE_INDEX)))

    @property
    def batch_limit(self) -> int:
        """Buffered ``row_bytes`` at which the rows are written as a batch."""
        return min(BATCH_BYTES, self.shard_size)

    def write_batch(self, batch: pa.RecordBatch, tokens: int, trained: int) -> None:
        """Write one batch built as ``_flush`` builds one, cut where ``add`` would cut it (for a
        caller holding its rows as columns: a mix's main pass); the shard is closed once full."""
        if self._ids:
            raise RuntimeError("write_batch after add: the buffered rows would change the batches")
        if self._writer is None:
            self._open()
        self._writer.write_batch(batch)
        self._shard_rows += batch.num_rows
        self._shard_tokens += tokens
        self._shard_trained += trained
        self._shard_bytes += batch.nbytes
        if self._shard_bytes >= self.shard_size:
            self._close_shard()

    def _open(self) -> None:
        name = self.shard_name(self._part)
        self._tmp = temp_path(self.out_dir / name)
        self._sink = pa.OSFile(str(self._tmp), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._sink.close()
        name = self.shard_name(self._part)
        final = self.out_dir / name
        atomic_replace(self._tmp, final, sync_dir=False, sync=self.sync)  # the folder: once, in finish()
        self.records.append(ShardRecord(name, self._shard_rows, self._shard_tokens, self._shard_trained,
                                        final.stat().st_size, file_sha256(final)))
        self._writer = self._sink = self._tmp = None
        self._part += 1
        self._shard_rows = self._shard_tokens = self._shard_trained = self._shard_bytes = 0

    def finish(self) -> list[ShardRecord]:
        self._flush()
        self._close_shard()
        if self.sync:
            fsync_dir(self.out_dir)
        return self.records

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
                self._sink.close()
            except Exception:  # noqa: BLE001 - cleanup after another error
                pass
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()
        self._writer = self._sink = self._tmp = None


__all__ = ["BASE_SCHEMA", "binary_array", "plain_array", "ShardRecord", "ShardWriter", "atomic_write_bytes", "fsync_dir", "fsync_file"]
