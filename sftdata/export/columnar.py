"""``parquet`` and ``megatron-bridge`` exports: Parquet files, one per prepared shard.

Why together: both are ``pyarrow.parquet`` files written shard by shard. ``parquet`` keeps every
prepared column as it is, for streaming readers and any other tool. ``megatron-bridge`` writes the
packed-sequence Parquet that Megatron-Bridge's packed SFT dataset reads (``*.idx.parquet``):
``input_ids`` (int32), ``seq_start_id`` (int32, where each conversation starts in the row) and
``loss_mask`` (int8) already rolled to the label position — ``loss_mask[i]`` says whether token
``i + 1`` of the same conversation is trained, and the last position of each conversation is 0 —
because at run time it takes ``tokens = ids[s:e-1]``, ``labels = ids[s+1:e]`` and
``loss_mask = mask[s:e-1]`` per conversation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sftdata.constants import IGNORE_INDEX
from sftdata.export.commit import write_json
from sftdata.export.options import ExportOptions
from sftdata.export.source import Rows, Source, iter_rows, list_array, tally
from sftdata.stages.write.arrow import fsync_file

MEGATRON_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("loss_mask", pa.list_(pa.int8())),
                             ("seq_start_id", pa.list_(pa.int32()))])


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, str(path), compression="zstd")
    fsync_file(path)


def write_parquet(source: Source, folder: Path, opts: ExportOptions) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"rows": 0, "conversations": 0, "tokens": 0, "trained_tokens": 0, "files": []}
    for name, rows in iter_rows(source):
        file = name.rsplit(".", 1)[0] + ".parquet"
        table = rows.table
        if source.packed and opts.unpack:
            table = pa.table({"input_ids": list_array(rows.input_ids, rows.segments),
                              "labels": list_array(rows.labels, rows.segments)})
        _write_parquet(table, folder / file)
        counts["files"].append(file)
        tally(counts, table.num_rows, rows)
        del table, rows  # before the next shard is read
    return counts


def rolled_loss_mask(rows: Rows) -> np.ndarray:
    """``mask[i] = labels[i + 1] != -100`` within a conversation; 0 at each conversation's last token."""
    trained = rows.labels != IGNORE_INDEX
    mask = np.zeros(len(trained), dtype=np.int8)
    mask[:-1] = trained[1:]
    ends = rows.segments[1:] - 1
    mask[ends[ends >= 0]] = 0
    return mask


def megatron_table(rows: Rows, keep_packing: bool) -> pa.Table:
    offsets = rows.offsets if keep_packing else rows.segments
    starts = rows.segments[:-1]
    row_of_seg = np.searchsorted(offsets, starts, side="right") - 1
    seq_start = (starts - offsets[:-1][row_of_seg]).astype(np.int32)
    seg_offsets = np.searchsorted(starts, offsets)
    return pa.Table.from_arrays([list_array(rows.input_ids, offsets),
                                 list_array(rolled_loss_mask(rows), offsets, pa.int8()),
                                 list_array(seq_start, seg_offsets)], schema=MEGATRON_SCHEMA)


def write_megatron(source: Source, folder: Path, opts: ExportOptions) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    keep = opts.keep_packing(source.packed)
    counts = {"rows": 0, "conversations": 0, "tokens": 0, "trained_tokens": 0, "files": []}
    max_samples, max_len, min_packed = 0, 0, None
    for name, rows in iter_rows(source):
        file = name.rsplit(".", 1)[0] + ".idx.parquet"
        table = megatron_table(rows, keep)
        _write_parquet(table, folder / file)
        offsets = rows.offsets if keep else rows.segments
        per_row = np.diff(np.searchsorted(rows.segments, offsets))
        max_samples = max(max_samples, int(per_row.max()) if len(per_row) else 0)
        max_len = max(max_len, int(np.diff(rows.segments).max()) if len(rows.segments) > 1 else 0)
        if len(offsets) > 1:
            shortest = int(np.diff(offsets).min())
            min_packed = shortest if min_packed is None else min(min_packed, shortest)
        counts["files"].append(file)
        tally(counts, table.num_rows, rows, int(rolled_loss_mask(rows).sum()))
        del table, rows  # before the next shard is read
    # read by GPTSFTPackedDataset.collate_fn when pad_cu_seqlens is on (CUDA graphs)
    write_json(folder / "packing_metadata.json", [{"max_samples_per_bin": max_samples, "dataset_max_seqlen": max_len,
                                                   "min_packed_seqlen": min_packed or 0}])
    return counts
