"""Flat numpy columns with offsets: the vectorised audit's building blocks.

A slice of rows becomes one flat array per list column plus an offsets array
(``list_parts``, ``iter_slices``); the rules then work on positions with ``searchsorted``,
``bincount`` and cumulative sums (``align``, ``first_per_group``, ``member``, ``unique_inverse``,
``first_and_count``) instead of looping over rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sftdata.constants import IGNORE_INDEX

# Rows are checked in slices of about this many tokens: bounded memory, warm caches. A slice's arrays
# (and, with the pages of a mapped shard let go after each slice, its file pages) are what one audit
# process holds, whatever the shard's size; 2**19 is below the shards of a run of a few hundred MB.
CHUNK_TOKENS = 1 << 18
LIST_COLUMNS = ("input_ids", "labels", "position_ids", "seq_lengths")


def _no_nulls(arr, value):
    """``fill_null`` only when needed: the call itself imports pandas."""
    return arr.fill_null(value) if arr.null_count else arr


def _is_int_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def column_problems(schema: pa.Schema) -> tuple[list[str], bool, bool]:
    """(problems, fatal, packed): ``fatal`` when the rows cannot be checked at all."""
    problems: list[str] = []
    names = set(schema.names)
    for name, ok in (("id", _is_str), ("input_ids", _is_int_list), ("labels", _is_int_list),
                     ("content_hash", _is_str), ("position_ids", _is_int_list), ("seq_lengths", _is_int_list)):
        if name in names and not ok(schema.field(name).type):
            problems.append(f"column {name} has type {schema.field(name).type}")
        elif name not in names and name not in ("position_ids", "seq_lengths"):
            problems.append(f"no column {name}")
    fatal = any(f"column {c} " in p or p == f"no column {c}" for p in problems for c in ("id", "input_ids", "labels"))
    packed = {"position_ids", "seq_lengths"} <= names
    if len(names & {"position_ids", "seq_lengths"}) == 1:
        problems.append("packed output needs both position_ids and seq_lengths")
    if packed and "packed_ids" in names:
        t = schema.field("packed_ids").type
        if not ((pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_str(t.value_type)):
            problems.append(f"column packed_ids has type {t}")
            fatal = True
    bad_packing = any(c in p for p in problems for c in ("position_ids", "seq_lengths"))
    return problems, fatal or bad_packing, packed


_NP_INTS = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64}


def _int_buffer(arr: pa.Array, count: int, start: int = 0) -> np.ndarray | None:
    """An integer array's values as a zero-copy numpy view, or None when that is not possible.
    Going through the buffers keeps pyarrow from importing pandas (half a second per audit)."""
    dtype = _NP_INTS.get(arr.type)
    if dtype is None or arr.null_count:
        return None
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=count, offset=(arr.offset + start) * np.dtype(dtype).itemsize)


def _wide(values: np.ndarray) -> np.ndarray:
    """Integers narrower than 32 bits widened: token ids (up to 128,256) and -100 must fit."""
    return values.astype(np.int32) if values.dtype.kind in "iu" and values.dtype.itemsize < 4 else values


def list_parts(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (flat values, per-row lengths) numpy arrays; a null list is an empty one."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(arr.type) and not arr.null_count and len(arr):
        offs = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
        values = _int_buffer(arr.values, int(offs[-1] - offs[0]), int(offs[0]))
        if values is not None:
            return _wide(values), np.diff(offs).astype(np.int64)
    lens = _no_nulls(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(arr)
    if flat.null_count:
        flat = _no_nulls(flat, IGNORE_INDEX if pa.types.is_integer(flat.type) else "")
    return _wide(flat.to_numpy(zero_copy_only=False)), lens


def _row_lengths(arr: pa.Array) -> np.ndarray:
    """Per-row lengths of a list array from its offsets alone (a null list: 0)."""
    if pa.types.is_list(arr.type) and not arr.null_count:
        return np.diff(np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1,
                                     offset=arr.offset * 4)).astype(np.int64)
    return _no_nulls(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)


def iter_slices(table: pa.Table, packed: bool, chunk_tokens: int | None = None) -> Iterator[tuple[int, dict]]:
    """(first row, columns) per slice of whole rows holding about ``chunk_tokens`` tokens."""
    chunk_tokens = chunk_tokens or CHUNK_TOKENS
    # the row lengths chunk by chunk: list_parts of the whole column would join its chunks (a copy
    # of every token of a shard written in several batches), where only the offsets are needed
    column = table.column("input_ids")
    parts = [_row_lengths(c) for c in column.chunks] if table.num_rows else []
    lens = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    cum = np.cumsum(lens)
    cuts = np.searchsorted(cum, np.arange(chunk_tokens, int(cum[-1]) if cum.size else 0, chunk_tokens), "right")
    bounds = sorted({0, table.num_rows, *(int(c) for c in cuts)})
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = table.slice(a, b - a)
        names = [c for c in LIST_COLUMNS if c in part.column_names and (packed or c in ("input_ids", "labels"))]
        cols: dict = {c: list_parts(part.column(c)) for c in names}
        cols["id"] = part.column("id").combine_chunks()
        if packed and "packed_ids" in part.column_names:
            pid = part.column("packed_ids").combine_chunks()
            lengths = _no_nulls(pc.list_value_length(pid), 0).to_numpy(zero_copy_only=False)
            cols["packed_ids"] = (pc.list_flatten(pid), lengths.astype(np.int64))
        yield a, cols


# Numpy helpers over flat list columns (offsets, spans, sorted position arrays), shared by the rules.


def offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def align(values: np.ndarray, lens: np.ndarray, want: np.ndarray, fill: int) -> tuple[np.ndarray, np.ndarray]:
    """``values`` laid out by the rows' token offsets; rows whose length differs get ``fill``."""
    same = lens == want
    if same.all():
        return values, same
    rows = np.arange(len(lens))
    out = np.full(int(want.sum()), fill, values.dtype)
    out[same[np.repeat(rows, want)]] = values[same[np.repeat(rows, lens)]]
    return out, same


def first_per_group(bad: np.ndarray, groups_of_bad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sorted positions ``bad`` and their (so non-decreasing) groups: each group hit, its first
    position, and how many hits. A diff, not ``np.unique``: no sort or hash needed."""
    if not bad.size:
        return bad, bad, bad
    new = np.flatnonzero(np.concatenate([[True], groups_of_bad[1:] != groups_of_bad[:-1]]))
    return groups_of_bad[new], bad[new], np.diff(np.append(new, len(bad)))


def member(values: np.ndarray, sorted_pool: np.ndarray) -> np.ndarray:
    """``np.isin`` for a sorted pool, by binary search (numpy's isin/unique hash and are slow here)."""
    if not sorted_pool.size:
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_pool, values), len(sorted_pool) - 1)
    return sorted_pool[at] == values


def unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each distinct key's first occurrence, inverse) via one stable argsort."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    new = np.concatenate([[True], np.any(ordered[1:] != ordered[:-1], axis=tuple(range(1, keys.ndim)))])
    inverse = np.empty(len(keys), np.int64)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse


def first_and_count(marks: np.ndarray, start: np.ndarray, end: np.ndarray, none: int) -> tuple[np.ndarray, np.ndarray]:
    """Per span [start, end): the first of the sorted positions ``marks`` inside it, and how many."""
    lo, hi = np.searchsorted(marks, start), np.searchsorted(marks, end)
    first = marks[np.minimum(lo, len(marks) - 1)] if len(marks) else np.full(len(start), none)
    return np.where(hi > lo, first, none), hi - lo
