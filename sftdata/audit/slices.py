"""Reading one part of data without a manifest in bounded slices of whole rows.

Why slices: the audit of a prepared folder checks each shard in slices, so its peak memory
follows the slice, not the data. A foreign part used to be read whole and normalised at about
five times its size (a 1.5 GB Arrow file needed 8 GB). Here every format yields tables of at
most ``SLICE_TOKENS`` tokens (or one row), and one row longer than ``MAX_ROW_TOKENS`` is refused
with its size, since no slice could hold it:

* Arrow (IPC stream or file, what ``datasets`` and others write): memory-mapped, record batch by
  record batch; the map is closed and reopened every ``MAP_WINDOW`` bytes read, so the pages
  already checked do not stay resident.
* Parquet: row group by row group through ``iter_batches``, with a batch size from the row
  group's own value count, and the row group refused unread when its one row is too long.
* JSON Lines: streamed line by line; each value is checked in Python (a string id, a boolean,
  a nested list or an id beyond 64 bits is refused naming its row and line).
* MDS and OLMo-core: `sftdata.audit.binary_formats`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from sftdata.audit.integrity import MalformedDataError

SLICE_TOKENS = 1 << 20  # tokens per slice read from a part
MAX_ROW_TOKENS = 1 << 22  # a longer row is refused: no Llama-3 model trains on it, no slice holds it
MAP_WINDOW = 1 << 26  # bytes of a memory-mapped Arrow file read before the map is reopened
JSONL_ROWS = 4096  # at most this many JSON Lines rows per slice
MAX_LINE_CHARS = MAX_ROW_TOKENS * 32  # ids and labels of the longest row, written as JSON numbers


def row_lengths(column: Any) -> np.ndarray:
    """Per-row list lengths (a null row counts 0) from the offsets alone: the values are not read."""
    import pyarrow.compute as pc

    lens = pc.list_value_length(column)
    return (lens.fill_null(0) if lens.null_count else lens).to_numpy(zero_copy_only=False).astype(np.int64)


def cuts(lens: np.ndarray, where: str, first_row: int) -> list[tuple[int, int]]:
    """[a, b) row ranges of about ``SLICE_TOKENS`` tokens (at least one row each); an oversized row
    is refused with its size."""
    big = np.flatnonzero(lens > MAX_ROW_TOKENS)
    if big.size:
        r = int(big[0])
        raise MalformedDataError(f"{where}: row {first_row + r}: {int(lens[r]):,} tokens in one row, more than the "
                                 f"{MAX_ROW_TOKENS:,} the audit reads at once (no Llama-3 context is that long)")
    cum = np.cumsum(lens)
    marks = np.searchsorted(cum, np.arange(SLICE_TOKENS, int(cum[-1]) if cum.size else 0, SLICE_TOKENS), "right")
    bounds = sorted({0, len(lens), *(max(1, int(c)) for c in marks)})
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


# ----------------------------------------------------------------------------------------- Arrow


def _open_ipc(source: pa.NativeFile) -> tuple[Any, bool]:
    """(reader, is the random-access file format), told by the file format's magic bytes:
    ``datasets`` writes streams, others files. (Opening a file as a stream can read a size from
    its magic and touch gigabytes of the map before it fails.)"""
    is_file = source.read(6) == b"ARROW1"
    source.seek(0)
    return (pa.ipc.open_file(source), True) if is_file else (pa.ipc.open_stream(source), False)


def _batch_at(reader: Any, is_file: bool, index: int, skip: int) -> pa.RecordBatch | None:
    """Batch ``index``: a file reads it directly; a stream reads ``skip`` batches on (reading their
    headers, not their bodies, from a memory map) and returns the last."""
    if is_file:
        return reader.get_batch(index) if index < reader.num_record_batches else None
    batch = None
    for _ in range(skip):
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return None
    return batch


def arrow_schema(path: str) -> pa.Schema:
    with pa.memory_map(path) as source:
        return _open_ipc(source)[0].schema


def _window(path: str, where: str, columns: list[str], at: tuple[int, int, int]):
    """Slices from batch ``at[0]``, row ``at[1]`` (global row ``at[2]``) until ``MAP_WINDOW`` bytes
    are read; returns where to go on, or None at the end."""
    index, row, first = at
    used = 0
    with pa.memory_map(path) as source:
        reader, is_file = _open_ipc(source)
        batch = _batch_at(reader, is_file, index, index + 1)
        while batch is not None:
            lens = row_lengths(batch.column(columns[0]))
            width = sum(batch.column(c).nbytes for c in columns) / max(int(lens.sum()), 1)
            for a, b in cuts(lens[row:], where, first):
                part = batch.slice(row + a, b - a).select(columns)
                yield first + a, pa.Table.from_batches([part])
                used += int(lens[row + a:row + b].sum() * width) + 1
                if used >= MAP_WINDOW and row + b < len(lens):
                    return index, row + b, first + b
            first += len(lens) - row
            index, row = index + 1, 0
            if used >= MAP_WINDOW:
                return index, 0, first
            batch = _batch_at(reader, is_file, index, 1)
    return None


def arrow_slices(path: str, where: str, columns: list[str]) -> Iterator[tuple[int, pa.Table]]:
    """(first row, table) per slice; ``columns[0]`` holds the token ids."""
    at: tuple[int, int, int] | None = (0, 0, 0)
    while at is not None:
        at = yield from _window(path, where, columns, at)


# --------------------------------------------------------------------------------------- Parquet


def parquet_slices(path: str, where: str, columns: list[str]) -> Iterator[tuple[int, pa.Table]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    meta = pf.metadata
    leaf = next((i for i in range(meta.num_columns)
                 if meta.schema.column(i).path.split(".")[0] == columns[0]), None)
    first = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        values = group.column(leaf).num_values if leaf is not None else 0
        if group.num_rows == 1 and values > MAX_ROW_TOKENS:
            cuts(np.asarray([values]), where, first)  # refused unread, with its size
        per = max(1, min(group.num_rows, SLICE_TOKENS * group.num_rows // max(values, 1)))
        for batch in pf.iter_batches(batch_size=per, row_groups=[g], columns=columns, use_threads=False):
            lens = row_lengths(batch.column(0))
            for a, b in cuts(lens, where, first):
                yield first + a, pa.Table.from_batches([batch.slice(a, b - a)])
            first += batch.num_rows


# ------------------------------------------------------------------------------------ JSON Lines

_INT64 = (-(1 << 63), (1 << 63) - 1)


def _type_of(value: Any) -> pa.DataType:
    """The column type a JSON value stands for (used for the layout and its type checks)."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, list):
        inner = {_type_of(v) for v in value}
        if inner <= {pa.int64()}:
            return pa.list_(pa.int64())
        if inner == {pa.float64(), pa.int64()}:
            return pa.list_(pa.float64())
        return pa.list_(inner.pop() if len(inner) == 1 else pa.string())
    if isinstance(value, dict):
        return pa.struct([])
    return pa.string()


def _problem(value: Any, role: str) -> str | None:
    """Why a JSON value cannot be a row of the ``role`` column, or None."""
    if not isinstance(value, list):
        return f"is {type(value).__name__}, not a list"
    for x in value:
        if isinstance(x, bool):
            if role != "mask":
                return f"holds the boolean {x}, not an integer"
        elif isinstance(x, int):
            if not _INT64[0] <= x <= _INT64[1]:
                return f"holds {x}, beyond a 64-bit integer"
        elif not (isinstance(x, float) and role == "mask"):
            return f"holds {json.dumps(x)[:40]}, not an integer"
    return None


def _jsonl_rows(path: str, where: str) -> Iterator[tuple[int, int, dict]]:
    """(row, line, record) per non-blank line; a line that is not a JSON object, or longer than
    ``MAX_LINE_CHARS`` (read no further than that), is refused."""
    row = 0
    with open(path, encoding="utf-8", errors="strict") as f:
        for line_no in itertools.count(1):
            line = f.readline(MAX_LINE_CHARS + 1)
            if not line:
                return
            if len(line) > MAX_LINE_CHARS:
                raise MalformedDataError(f"{where}: row {row} (line {line_no}): longer than {MAX_LINE_CHARS:,} "
                                         "characters, more than a row of the longest the audit reads")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError) as exc:
                why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise MalformedDataError(f"{where}: row {row} (line {line_no}): not JSON: {why}") from None
            if not isinstance(rec, dict):
                raise MalformedDataError(f"{where}: row {row} (line {line_no}): a JSON {type(rec).__name__}, "
                                         "not an object")
            yield row, line_no, rec
            row += 1


def jsonl_schema(path: str, where: str) -> pa.Schema | None:
    """The columns of the first record (None for a file without records)."""
    for _, _, rec in _jsonl_rows(path, where):
        return pa.schema([(k, _type_of(v)) for k, v in rec.items()])
    return None


_TYPES = {"id": pa.string(), "mask": pa.list_(pa.float64())}


def _table(rows: list[dict], roles: dict[str, str]) -> pa.Table:
    """The checked values as columns: ids, labels and lengths int64, a mask float64 (0/1, or
    whatever else it holds, for ``mask_values`` to name)."""
    return pa.table({name: pa.array([r[name] for r in rows], _TYPES.get(role, pa.list_(pa.int64())))
                     for name, role in roles.items()})


def jsonl_slices(path: str, where: str, roles: dict[str, str]) -> Iterator[tuple[int, pa.Table]]:
    """``roles``: column -> ids | labels | mask | lengths | id; each value is checked before use."""
    batch: list[dict] = []
    tokens, first = 0, 0
    ids = next(c for c, r in roles.items() if r == "ids")
    for row, line_no, rec in _jsonl_rows(path, where):
        kept = {}
        for name, role in roles.items():
            value = rec.get(name)
            if role == "id":
                kept[name] = None if value is None else str(value)
                continue
            problem = "is missing" if name not in rec else _problem(value, role)
            if problem:
                raise MalformedDataError(f"{where}: row {row} (line {line_no}): {name} {problem}")
            kept[name] = value
        n = len(kept[ids])
        cuts(np.asarray([n]), where, row)
        if batch and tokens + n > SLICE_TOKENS or len(batch) >= JSONL_ROWS:
            yield first, _table(batch, roles)
            batch, tokens, first = [], 0, row
        batch.append(kept)
        tokens += n
    if batch:
        yield first, _table(batch, roles)
