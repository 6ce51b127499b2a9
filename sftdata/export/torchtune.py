"""``torchtune`` export: ``tokens``/``labels`` rows, and packed rows the way ``PackedDataset`` pads them.

Why these facts, read from torchtune 0.6.1 (the release on PyPI): its ``SFTDataset`` emits
``labels`` aligned with ``tokens`` (-100 where masked) and its recipes shift them
(``torch.hstack((labels[..., 1:], ignore))``), so the export keeps our unshifted labels. Its
``main`` branch moved the shift into the dataset; ``sftdata.integrations.torchtune.prepared``
checks which one is installed and shifts per conversation at load time when needed, so one export
serves both. Packed rows follow ``PackedDataset._pad_pack``: tokens padded with the pad id to
``max_seq_len``, labels with -100, ``input_pos`` continuing from the last position (clamped to
``max_seq_len - 1``) and the padding counted as a final ``seq_lens`` entry, so that
``padded_collate_packed`` can ``torch.stack`` the rows and build its block-causal mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from sftdata.constants import IGNORE_INDEX
from sftdata.export.commit import DatasetWriter
from sftdata.export.ipc_stream import StandIns, parts_fill, stand_in_table
from sftdata.export.options import ExportOptions
from sftdata.export.source import ExportError, Rows, Source, iter_rows, list_array, tally
from sftdata.storage.opener import release_pages

INT_LIST = pa.list_(pa.int32())
PLAIN_SCHEMA = pa.schema([("tokens", INT_LIST), ("labels", INT_LIST)])
PACKED_SCHEMA = pa.schema([*PLAIN_SCHEMA, ("input_pos", INT_LIST), ("seq_lens", INT_LIST)])


def packed_table(rows: Rows, max_seq_len: int, pad_id: int) -> pa.Table:
    """Packed rows padded to ``max_seq_len`` with torchtune's padding rules."""
    lengths = np.diff(rows.offsets)
    if len(lengths) and lengths.max() > max_seq_len:
        raise ExportError(f"a packed row has {int(lengths.max())} tokens, more than --max-seq-len {max_seq_len}")
    n = rows.rows
    out_offsets = np.arange(n + 1, dtype=np.int64) * max_seq_len
    tokens = np.full(n * max_seq_len, pad_id, dtype=np.int32)
    labels = np.full(n * max_seq_len, IGNORE_INDEX, dtype=np.int32)
    input_pos = np.empty(n * max_seq_len, dtype=np.int32)
    positions = rows.positions()
    # where each source token lands: its row's start in the output plus its offset within the row
    row_of_token = np.repeat(np.arange(n), lengths)
    dest = out_offsets[:-1][row_of_token] + (np.arange(len(rows.input_ids)) - rows.offsets[:-1][row_of_token])
    tokens[dest] = rows.input_ids
    labels[dest] = rows.labels
    input_pos[dest] = positions
    for r in range(n):  # padding positions continue from the row's last position
        start, used = out_offsets[r], lengths[r]
        last = positions[rows.offsets[r + 1] - 1] if used else -1
        input_pos[start + used:start + max_seq_len] = np.minimum(
            np.arange(last + 1, last + 1 + max_seq_len - used), max_seq_len - 1)
    seg_lens = np.diff(rows.segments)
    segs_per_row = np.diff(np.searchsorted(rows.segments, rows.offsets))
    pads = max_seq_len - lengths
    seq_lens, seq_offsets = [], [0]
    cursor = 0
    for r in range(n):
        part = seg_lens[cursor:cursor + segs_per_row[r]]
        cursor += segs_per_row[r]
        seq_lens.append(part)
        if pads[r] > 0:
            seq_lens.append(np.array([pads[r]]))
        seq_offsets.append(seq_offsets[-1] + len(part) + (1 if pads[r] > 0 else 0))
    flat_lens = np.concatenate(seq_lens) if seq_lens else np.zeros(0, dtype=np.int32)
    return pa.Table.from_arrays([list_array(tokens, out_offsets), list_array(labels, out_offsets),
                                 list_array(input_pos, out_offsets),
                                 list_array(flat_lens, np.asarray(seq_offsets))], schema=PACKED_SCHEMA)


def plain_table(rows: Rows) -> pa.Table:
    return pa.Table.from_arrays([list_array(rows.input_ids, rows.segments), list_array(rows.labels, rows.segments)],
                                schema=PLAIN_SCHEMA)


def streamed_plain_table(rows: Rows) -> tuple[pa.Table, StandIns]:
    """``plain_table(rows)`` with stand-ins for its two value buffers, streamed from the shard's batches."""
    release = (lambda: release_pages(rows.mapped)) if rows.mapped is not None else None
    return stand_in_table(PLAIN_SCHEMA, rows.segments, rows.tokens,
                          [parts_fill(rows.id_parts, release), parts_fill(rows.label_parts, release)])


def max_seq_len_for(source: Source, opts: ExportOptions) -> int:
    value = opts.max_seq_len or source.max_length
    if not value:
        raise ExportError("packed torchtune rows need a row length: pass --max-seq-len")
    return int(value)


def write_torchtune(source: Source, folder: Path, opts: ExportOptions) -> dict:
    keep = opts.keep_packing(source.packed)
    writer = DatasetWriter(folder, PACKED_SCHEMA if keep else PLAIN_SCHEMA)
    counts = {"rows": 0, "conversations": 0, "tokens": 0, "trained_tokens": 0}
    length = max_seq_len_for(source, opts) if keep else None
    for _, rows in iter_rows(source):
        table, stand = (packed_table(rows, length, source.pad_id), None) if keep else streamed_plain_table(rows)
        writer.write(table, stand)
        tally(counts, table.num_rows, rows)
        if stand is not None:
            stand.close()
        del table, rows, stand  # before the next shard is read
    writer.finish()
    if keep:
        counts["max_seq_len"] = length
    return counts
