"""Rows the rules can be applied to at all: each slice of data without a manifest, checked before
it is normalised.

Why refuse rather than report: a row whose labels are one longer than its ids, a null labels row
or ``seq_lengths`` that sum short of the row are not a mask that trains the wrong tokens; they
are data no trainer can line up, and every rule downstream would guess. So each is refused with
one line naming the file, the row and the problem (`MalformedDataError`, exit 2). Loss-mask
values other than 0 and 1 are different: the data is readable, and wrong for a trainer that
multiplies the loss by the mask (-1 ascends the gradient of the answers), so they fail the
``mask_values`` rule.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sftdata.audit.arrays import offsets
from sftdata.audit.columns import Layout, column_parts
from sftdata.audit.integrity import MalformedDataError
from sftdata.audit.report import Violations


def _nulls(table: pa.Table, name: str, where: str, first_row: int) -> None:
    import pyarrow.compute as pc

    col = table.column(name).combine_chunks()
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise MalformedDataError(f"{where}: row {first_row + row}: {name} is null")
    flat = pc.list_flatten(col)
    if flat.null_count:
        at = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
        row = int(pc.list_parent_indices(col)[at].as_py())
        raise MalformedDataError(f"{where}: row {first_row + row}: {name} holds a null value")


def _same_lengths(lens: np.ndarray, other: np.ndarray, what: str, ids: str, where: str, first_row: int) -> None:
    bad = np.flatnonzero(lens != other)
    if bad.size:
        r = int(bad[0])
        raise MalformedDataError(f"{where}: row {first_row + r}: {other[r]} {what} for {lens[r]} {ids} "
                                 f"({bad.size} such row(s) in rows {first_row}-{first_row + len(lens) - 1})")


def _segments(table: pa.Table, lay: Layout, lens: np.ndarray, where: str, first_row: int) -> None:
    """seq_lengths / seq_lens sum to the row with no length below 1; seq_start_id starts at 0 and rises."""
    sl, slens = column_parts(table.column(lay.seq_lengths))
    sl = sl.astype(np.int64, copy=False) if sl.dtype != np.uint64 else sl.astype(np.float64)
    row_of = np.repeat(np.arange(len(slens)), slens)
    if lay.seq_lengths == "seq_start_id":
        starts = offsets(slens)[:-1]
        first_ok = np.ones(len(slens), bool)
        first_ok[slens > 0] = sl[starts[slens > 0]] == 0
        rising = np.ones(len(sl), bool)
        rising[1:] = (sl[1:] > sl[:-1]) | (row_of[1:] != row_of[:-1])
        inside = sl < np.repeat(np.maximum(lens, 1), slens)
        bad_rows = np.union1d(np.flatnonzero(~first_ok), row_of[~(rising & inside)])
        if bad_rows.size:
            r = int(bad_rows[0])
            raise MalformedDataError(f"{where}: row {first_row + r}: seq_start_id must start at 0 and rise "
                                     f"inside the row of {lens[r]} tokens")
        return
    sums = np.bincount(row_of, weights=sl, minlength=len(lens))
    low = np.bincount(row_of, weights=sl < 1, minlength=len(lens)) > 0
    bad = np.flatnonzero((sums != lens) | low)
    if bad.size:
        r = int(bad[0])
        extra = " (a length below 1)" if low[r] else ""
        raise MalformedDataError(f"{where}: row {first_row + r}: {lay.seq_lengths} sum to {int(sums[r])} for a "
                                 f"row of {lens[r]} tokens{extra}")


def check_rows(table: pa.Table, lay: Layout, where: str, first_row: int) -> None:
    """Refuse the first row that does not line up (nulls, lengths, packing columns)."""
    used = [c for c in (lay.ids, lay.labels, lay.mask, lay.position_ids, lay.seq_lengths) if c]
    for name in used:
        _nulls(table, name, where, first_row)
    _, lens = column_parts(table.column(lay.ids))
    for name in (lay.labels, lay.mask, lay.position_ids):
        if name:
            _same_lengths(lens, column_parts(table.column(name))[1], name, lay.ids, where, first_row)
    if lay.seq_lengths:
        _segments(table, lay, lens, where, first_row)


def mask_values(table: pa.Table, lay: Layout, shard: str, first_row: int, sink: Violations) -> None:
    """A loss mask holds 0 and 1 (or false and true) only; one ``mask_values`` violation per row."""
    if not lay.mask:
        return
    values, vlens = column_parts(table.column(lay.mask))
    bad = np.flatnonzero(~((values == 0) | (values == 1)))
    if not bad.size:
        return
    rows = np.repeat(np.arange(len(vlens)), vlens)[bad]
    starts = offsets(vlens)
    first = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
    counts = np.diff(np.append(first, len(rows)))
    for k, f in enumerate(first):
        r, at = int(rows[f]), int(bad[f])
        value = values[at].item()
        why = ("-1 makes a trainer that multiplies the loss by the mask ascend the gradient of the answer"
               if value == -1 else "a loss weight, not a 0/1 mask: the audit cannot tell which tokens train")
        sink.add("mask_values", f"{lay.mask} holds {value!r} ({int(counts[k])} value(s) other than 0 and 1 in the "
                 f"row): {why}", shard=shard, row=first_row + r, position=at - int(starts[r]))
