"""Which columns of another tool's data hold the ids and the loss, and the audit's layout made from them.

Why here and not in each tool's reader: the conventions cross tools (``labels`` with -100 from
TRL and Axolotl, ``assistant_masks`` from ``apply_chat_template``, a rolled ``loss_mask`` from
Megatron-Bridge, ``tokens`` / ``input_pos`` / ``seq_lens`` from torchtune, padded packs), so one
detector serves every file. Detection is reported, never silent: the report says which columns
were used and whether the labels were shifted, and ``--labels-column`` / ``--mask-column`` /
``--shifted`` override it. Everything is numpy over whole columns, like the rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sftdata.audit.arrays import align, list_parts, offsets
from sftdata.audit.declared import column_type_problem
from sftdata.audit.integrity import AuditError, MalformedDataError
from sftdata.constants import IGNORE_INDEX

ID_COLUMNS = ("input_ids", "tokens")
MASK_COLUMNS = ("assistant_masks", "completion_mask", "loss_mask", "labels_mask")
ROW_ID_COLUMNS = ("id", "conversation_id", "uid")
SEQ_COLUMNS = ("seq_lengths", "seq_lens", "seq_start_id")  # sftdata/TRL, torchtune, Megatron-Bridge
POSITION_COLUMNS = ("position_ids", "input_pos")  # HF, torchtune


@dataclass(frozen=True)
class Layout:
    """Which columns hold what, and whether the labels are shifted by one (next-token targets)."""

    ids: str
    labels: str | None
    mask: str | None
    shifted: bool
    shift_detected: bool
    row_id: str | None
    seq_lengths: str | None
    position_ids: str | None

    def describe(self) -> str:
        src = f"labels column {self.labels!r}" if self.labels else f"mask column {self.mask!r}"
        shift = ", read as shifted by one" if self.shifted else ""
        packed = f", packed by {self.seq_lengths or self.position_ids!r}" if self.seq_lengths or self.position_ids else ""
        return f"{self.ids!r} with {src}{shift}{packed}"


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _id_like(t: pa.DataType) -> bool:
    """A column that can name rows (as text): strings and integers; anything else is not used."""
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)


def layout(schema: pa.Schema, labels_column: str | None, mask_column: str | None, part: str) -> Layout:
    """The columns to use (explicit names first, then ``labels``, then the first mask column).
    A chosen column whose type cannot hold what it should is refused (`MalformedDataError`)."""
    names = schema.names

    def need(name: str, role: str) -> str:
        if name not in names:
            raise AuditError(f"{part}: no column {name!r} (columns: {', '.join(names)})")
        problem = column_type_problem(schema.field(name).type, role)
        if problem:
            raise MalformedDataError(f"{part}: column {name!r} {problem}")
        return name

    ids = next((c for c in ID_COLUMNS if c in names), None)
    if ids is None:
        raise AuditError(f"{part}: no input_ids (or tokens) column (columns: {', '.join(names)})")
    need(ids, "ids")
    if labels_column and mask_column:
        raise AuditError("give --labels-column or --mask-column, not both")
    if labels_column:
        labels, mask = need(labels_column, "labels"), None
    elif mask_column:
        labels, mask = None, need(mask_column, "mask")
    elif "labels" in names:
        labels, mask = need("labels", "labels"), None
    else:
        labels, mask = None, next((need(c, "mask") for c in MASK_COLUMNS if c in names), None)
        if mask is None:
            raise AuditError(f"{part}: no labels or loss-mask column ({', '.join(('labels', *MASK_COLUMNS))}); "
                             f"name one with --labels-column or --mask-column (columns: {', '.join(names)})")
    row_id = next((c for c in ROW_ID_COLUMNS if c in names and _id_like(schema.field(c).type)), None)
    seq = next((need(c, "lengths") for c in SEQ_COLUMNS if c in names and _is_list(schema.field(c).type)), None)
    pos = next((need(c, "lengths") for c in POSITION_COLUMNS if c in names and _is_list(schema.field(c).type)), None)
    return Layout(ids, labels, mask, False, False, row_id, seq, pos)


def column_parts(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """``list_parts`` on its zero-copy path: bool masks as int8, large lists as lists (the
    general path's ``to_numpy`` imports pandas, 2 s of a command that takes well under one)."""
    t = column.type
    if pa.types.is_large_list(t) and len(column) and sum(len(c.values) for c in column.chunks) < 2**31 - 1:
        t = pa.list_(t.value_type)
    if pa.types.is_boolean(t.value_type):
        t = pa.list_(pa.int8())
    return list_parts(column.cast(t) if t != column.type else column)


def shift_evidence(ids: np.ndarray, lens: np.ndarray, values: np.ndarray, vlens: np.ndarray, is_mask: bool,
                   closers: tuple[int, ...], end_header_id: int, header_newline: int | None) -> np.ndarray:
    """Counts (unshifted, shifted, of) that `shift_verdict` weighs, summed over slices. Labels: how
    many trained labels equal the input id at the same position and how many the *next* one. A
    mask (no values to compare): how many marks fall on closing tokens (unshifted masks train
    them) and how many on the header newline before answers (a mask rolled by one marks it)."""
    same = np.repeat(lens == vlens, lens)
    if not same.any():
        return np.zeros(3, np.int64)
    last = np.zeros(len(ids), bool)
    last[np.maximum(offsets(lens)[1:] - 1, 0)[lens > 0]] = True
    ids_s, vals_s, last_s = ids[same], values[same], last[same]
    if is_mask:
        marked = np.flatnonzero(vals_s != 0)
        at_close = np.count_nonzero(np.isin(ids_s[marked], closers))
        at_nl = np.count_nonzero((ids_s[marked] == header_newline) & (ids_s[np.maximum(marked - 1, 0)] == end_header_id))
        return np.asarray([at_close, at_nl, at_close + at_nl], np.int64)
    trained = np.flatnonzero((vals_s != IGNORE_INDEX) & ~last_s)
    here = np.count_nonzero(vals_s[trained] == ids_s[trained])
    ahead = np.count_nonzero(vals_s[trained] == ids_s[trained + 1])
    return np.asarray([here, ahead, trained.size], np.int64)


def shift_verdict(evidence: np.ndarray, is_mask: bool) -> str | None:
    """"shifted", "unshifted", or None when the data does not tell."""
    here, ahead, of = (int(x) for x in evidence)
    if is_mask:
        return None if here == ahead else "shifted" if ahead > here else "unshifted"
    if ahead > here and ahead >= 0.9 * of > 0:
        return "shifted"
    if here > ahead and here >= 0.9 * of > 0:
        return "unshifted"
    return None


def _unshift(values: np.ndarray, vlens: np.ndarray, fill: int) -> np.ndarray:
    """Move every value one position right within its row; the first position gets ``fill``."""
    out = np.empty_like(values)
    if values.size:
        out[1:] = values[:-1]
        starts = offsets(vlens)[:-1][vlens > 0]
        out[starts] = fill
    return out


def _arrow(values: np.ndarray) -> pa.Array:
    """A numeric numpy array as Arrow, zero-copy: ``pa.array(ndarray)`` imports pandas (2 s)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _list_array(values: np.ndarray, lens: np.ndarray) -> pa.Array:
    offs = offsets(lens)
    big = offs[-1] >= 2**31 - 1
    cls = pa.LargeListArray if big else pa.ListArray
    return cls.from_arrays(_arrow(offs if big else offs.astype(np.int32)), _arrow(values))


def _packing(table: pa.Table, lay: Layout, lens: np.ndarray) -> tuple[tuple, tuple] | None:
    """(position_ids, seq_lengths) as (values, per-row counts), from whichever the data has:
    seq_lengths / seq_lens, seq_start_id (Megatron), or position_ids / input_pos restarting at 0."""
    n = table.num_rows
    if lay.seq_lengths:
        sl, slens = column_parts(table.column(lay.seq_lengths))
        sl = sl.astype(np.int64)
        if lay.seq_lengths == "seq_start_id":  # starts within the row -> lengths
            row_end = np.repeat(lens, slens)
            nxt = np.append(sl[1:], 0)
            last = np.zeros(len(sl), bool)
            last[np.maximum(offsets(slens)[1:] - 1, 0)[slens > 0]] = True
            sl = np.where(last, row_end, nxt) - sl
    if lay.position_ids:
        pos, plens = column_parts(table.column(lay.position_ids))
    elif lay.seq_lengths:  # positions implied by the lengths
        seg = np.repeat(offsets(sl)[:-1], np.maximum(sl, 0))
        pos, plens = np.arange(len(seg)) - seg, lens
    else:
        return None
    if not lay.seq_lengths:  # a conversation starts wherever position_ids restart at 0
        starts = np.flatnonzero(pos == 0) if pos.size else np.zeros(0, np.int64)
        bounds = offsets(plens)
        cuts = np.union1d(starts, bounds[:-1][plens > 0])
        sl = np.diff(np.append(cuts, bounds[-1])).astype(np.int64)
        slens = np.bincount(np.searchsorted(bounds, cuts, "right") - 1, minlength=n).astype(np.int64)
    return (pos, plens), (sl, slens)


def _strip_padding(ids: np.ndarray, lens: np.ndarray, labels: np.ndarray, vlens: np.ndarray,
                   pad_ids: frozenset[int]) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Per row, how many trailing pad tokens to drop: collated or packed-and-padded rows (torchtune,
    a saved batch) end in padding that is no conversation. And (row, position, count) of the rows
    whose dropped padding was trained (and its first id), for ``pad_trained``."""
    if not pad_ids or not ids.size:
        return np.zeros(len(lens), np.int64), []
    pad = np.isin(ids, np.asarray(sorted(pad_ids), ids.dtype))
    bounds = offsets(lens)
    keep_at = np.where(~pad, np.arange(len(ids)), -1)
    full = lens > 0
    last = np.full(len(lens), -1, np.int64)
    last[full] = np.maximum.reduceat(keep_at, bounds[:-1][full])
    strip = np.where(full, bounds[1:] - 1 - np.maximum(last, bounds[:-1] - 1), 0)
    same = lens == vlens
    in_row = np.arange(len(ids)) - np.repeat(bounds[:-1], lens)
    tail = (in_row >= np.repeat(lens - strip, lens)) & np.repeat(same, lens)
    trained = np.zeros(len(ids), bool)
    trained[np.repeat(same, lens)] = labels[np.repeat(same, vlens)] != IGNORE_INDEX
    hit = np.flatnonzero(tail & trained)
    rows = np.repeat(np.arange(len(lens)), lens)[hit]
    uniq, first, counts = np.unique(rows, return_index=True, return_counts=True)
    return strip, [(int(r), int(in_row[hit[f]]), int(c), int(ids[hit[f]]))
                   for r, f, c in zip(uniq, first, counts, strict=True)]


def _cut(values: np.ndarray, vlens: np.ndarray, strip: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop ``strip`` trailing values of each row whose length equals the ids' (others as they are)."""
    drop = np.where(vlens == lens, strip, 0)
    if not drop.any():
        return values, vlens
    new = vlens - drop
    keep = (np.arange(len(values)) - np.repeat(offsets(vlens)[:-1], vlens)) < np.repeat(new, vlens)
    return values[keep], new


def _cut_segments(sl: np.ndarray, slens: np.ndarray, strip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Take the stripped padding off each row's last conversations (dropping the ones it empties)."""
    sl, slens = sl.copy(), slens.copy()
    bounds = offsets(slens)
    for r in np.flatnonzero(strip):
        left, k = int(strip[r]), int(bounds[r + 1]) - 1
        while left and k >= bounds[r]:
            take = min(left, int(sl[k]))
            sl[k] -= take
            left -= take
            k -= 1
    gone = sl <= 0
    if not gone.any():
        return sl, slens
    row_of = np.repeat(np.arange(len(slens)), slens)
    return sl[~gone], slens - np.bincount(row_of[gone], minlength=len(slens))


@dataclass(frozen=True)
class Normalised:
    """A part in the audit layout, the trailing padding dropped, and where dropped padding was trained."""

    table: pa.Table
    padding_stripped: int
    trained_padding: list[tuple[int, int, int, int]]  # (row, position in the row, trained pads, first id)


def normalise(table: pa.Table, lay: Layout, first_row: int, pad_ids: frozenset[int] = frozenset()) -> Normalised:
    """The audit layout: ``id``, ``input_ids``, unshifted ``labels``, and ``position_ids`` plus
    ``seq_lengths`` when the data is packed; trailing padding (``pad_ids``) dropped."""
    import pyarrow.compute as pc

    ids, lens = column_parts(table.column(lay.ids))
    if ids.dtype.kind == "u" and (ids.dtype.itemsize < 8 or not ids.size or int(ids.max()) < 2**63):
        ids = ids.astype(np.int64)  # unsigned ids cannot sit beside -100 labels
    if lay.labels:
        values, vlens = column_parts(table.column(lay.labels))
        labels = _unshift(values, vlens, IGNORE_INDEX) if lay.shifted else values
    else:
        raw, vlens = column_parts(table.column(lay.mask))
        mask = raw.astype(bool) if raw.dtype != bool else raw
        if lay.shifted:
            mask = _unshift(mask, vlens, False)
        on_mask, _ = align(ids, lens, vlens, IGNORE_INDEX)
        labels = np.where(mask, on_mask, IGNORE_INDEX).astype(ids.dtype)
    n = table.num_rows
    if lay.row_id:
        rid = pc.cast(table.column(lay.row_id).combine_chunks(), pa.string())
    else:
        rid = pc.cast(_arrow(np.arange(first_row, first_row + n)), pa.string())
    packing = _packing(table, lay, lens)
    strip, trained_pads = _strip_padding(ids, lens, labels, vlens, pad_ids)
    labels, vlens = _cut(labels, vlens, strip, lens)
    cols = {"id": rid}
    if packing is not None:
        (pos, plens), (sl, slens) = packing
        pos, plens = _cut(pos, plens, strip, lens)
        sl, slens = _cut_segments(sl, slens, strip)
        cols["position_ids"], cols["seq_lengths"] = _list_array(pos, plens), _list_array(sl, slens)
    ids, lens = _cut(ids, lens, strip, lens)
    cols.update({"input_ids": _list_array(ids, lens), "labels": _list_array(labels, vlens)})
    return Normalised(pa.table(cols), int(strip.sum()), trained_pads)
