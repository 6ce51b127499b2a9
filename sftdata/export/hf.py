"""``hf``, ``axolotl`` and ``llama-factory`` exports: ``datasets`` folders of int columns only.

Why one module: all three are ``load_from_disk`` folders with HF's unshifted labels and differ in
two facts checked against the trainers' code. Axolotl detects pre-tokenized data by exactly
``input_ids``, ``attention_mask`` and ``labels`` and re-packs rows itself (overwriting
``position_ids``), so packed rows go out one conversation per row. LLaMA-Factory forces
``remove_unused_columns: false``, so string columns must go, and its neat packing marks packed
conversations with segment ids 1..k in ``attention_mask`` and restarting ``position_ids``, which
is how packed rows are written for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from sftdata.export.commit import DatasetWriter
from sftdata.export.options import ExportOptions
from sftdata.export.source import Rows, Source, iter_rows, list_array, trained_count

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


def write_hf(source: Source, folder: Path, opts: ExportOptions) -> dict:
    """Write one split of a ``datasets`` folder; returns its counts."""
    keep = opts.keep_packing(source.packed)
    writer = DatasetWriter(folder, PACKED_SCHEMA if keep else PLAIN_SCHEMA)
    counts = {"rows": 0, "conversations": 0, "tokens": 0, "trained_tokens": 0}
    for _, rows in iter_rows(source):
        table = hf_table(rows, keep, segment_mask=True)
        writer.write(table)
        counts["rows"] += table.num_rows
        counts["conversations"] += len(rows.segments) - 1
        counts["tokens"] += len(rows.input_ids)
        counts["trained_tokens"] += trained_count(rows.labels)
    writer.finish()
    return counts
