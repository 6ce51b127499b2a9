"""``hf``, ``axolotl`` and ``llama-factory`` exports: ``datasets`` folders of int columns only.

Why one module: all three are ``load_from_disk`` folders with HF's unshifted labels and differ in
two facts checked against the trainers' code. Axolotl detects pre-tokenized data by exactly
``input_ids``, ``attention_mask`` and ``labels`` and re-packs rows itself (overwriting
``position_ids``), so packed rows go out one conversation per row. LLaMA-Factory forces
``remove_unused_columns: false``, so string columns must go, and its neat packing marks packed
conversations with segment ids 1..k in ``attention_mask`` and restarting ``position_ids``, padding
each packed row to ``cutoff_len + 1``, which is how packed rows are written for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sftdata.constants import IGNORE_INDEX
from sftdata.export.commit import DatasetWriter
from sftdata.export.ipc_stream import StandIns, constant_fill, parts_fill, stand_in_table
from sftdata.export.options import ExportOptions
from sftdata.export.source import ExportError, Rows, Source, iter_rows, list_array, tally
from sftdata.export.targets import Target
from sftdata.storage.opener import release_pages

INT_LIST = pa.list_(pa.int32())
PLAIN_SCHEMA = pa.schema([("input_ids", INT_LIST), ("attention_mask", INT_LIST), ("labels", INT_LIST)])
PACKED_SCHEMA = pa.schema([*PLAIN_SCHEMA, ("position_ids", INT_LIST)])


def hf_table(rows: Rows, keep_packing: bool, segment_mask: bool) -> pa.Table:
    """The rows as HF columns. ``keep_packing``: one output row per packed row, with restarting
    ``position_ids`` and, if ``segment_mask``, segment ids in ``attention_mask``; otherwise one
    row per conversation."""
    offsets = rows.offsets if keep_packing else rows.segments
    if keep_packing and segment_mask:
        mask = rows.segment_ids()
    else:
        mask = np.ones(len(rows.input_ids), dtype=np.int32)
    columns = [list_array(rows.input_ids, offsets), list_array(mask, offsets), list_array(rows.labels, offsets)]
    if keep_packing:
        columns.append(list_array(rows.positions(), offsets))
        return pa.Table.from_arrays(columns, schema=PACKED_SCHEMA)
    return pa.Table.from_arrays(columns, schema=PLAIN_SCHEMA)


def streamed_plain_table(rows: Rows) -> tuple[pa.Table, StandIns]:
    """``hf_table(rows, False, ...)`` with stand-ins for its three value buffers (ids, ones, labels),
    streamed from the shard's mapped batches as the file is written, its pages let go as they go."""
    release = (lambda: release_pages(rows.mapped)) if rows.mapped is not None else None
    fills = [parts_fill(rows.id_parts, release), constant_fill(1, np.int32), parts_fill(rows.label_parts, release)]
    return stand_in_table(PLAIN_SCHEMA, rows.segments, rows.tokens, fills)


def pad_packed(table: pa.Table, length: int, pad_id: int) -> pa.Table:
    """Right-pad packed rows to ``length`` as LLaMA-Factory's neat packing does (to ``cutoff_len + 1``,
    "to avoid flash_attn dropping the attention mask"): pad id, segment id 0, label -100, position 0."""
    lengths = np.asarray(pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False))
    if len(lengths) and lengths.max() > length:
        raise ExportError(f"a packed row has {int(lengths.max())} tokens, more than the padded length {length}")
    n = len(lengths)
    out_offsets = np.arange(n + 1, dtype=np.int64) * length
    keep = (np.arange(length)[None, :] < lengths[:, None]).ravel()
    columns = []
    for name, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", IGNORE_INDEX), ("position_ids", 0)):
        flat = np.full(n * length, fill, dtype=np.int32)
        flat[keep] = np.asarray(pc.list_flatten(table.column(name)).to_numpy(zero_copy_only=False))
        columns.append(list_array(flat, out_offsets))
    return pa.Table.from_arrays(columns, schema=PACKED_SCHEMA)


def write_hf(source: Source, folder: Path, opts: ExportOptions) -> dict:
    """Write one split of a ``datasets`` folder; returns its counts."""
    keep = opts.keep_packing(source.packed)
    writer = DatasetWriter(folder, PACKED_SCHEMA if keep else PLAIN_SCHEMA)
    counts = {"rows": 0, "conversations": 0, "tokens": 0, "trained_tokens": 0}
    padded = None
    if keep and opts.target is Target.LLAMA_FACTORY:
        cutoff = opts.max_seq_len or source.max_length
        if not cutoff:
            raise ExportError("packed LLaMA-Factory rows are padded to cutoff_len + 1: pass --max-seq-len")
        padded = cutoff + 1
        counts["cutoff_len"] = cutoff
    for _, rows in iter_rows(source):
        if not keep:  # the common case: streamed, never a copy of the shard's tokens
            table, stand = streamed_plain_table(rows)
            writer.write(table, stand)
            tally(counts, table.num_rows, rows)
            stand.close()
            del table, rows, stand
            continue
        table = hf_table(rows, keep, segment_mask=True)
        if padded:
            table = pad_packed(table, padded, source.pad_id)
        writer.write(table)
        tally(counts, table.num_rows, rows)
        del table, rows  # before the next shard is read
    writer.finish()
    return counts
