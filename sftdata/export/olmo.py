"""``olmo-core`` export: token id and label-mask memmaps, plus the document metadata OLMo-core reads.

Why these three files per part (checked against ai2-olmo-core 3.0.0, ``olmo_core.data``):
``NumpyFSLDataset``/``NumpyPaddedFSLDataset`` read raw ``np.memmap`` arrays (no ``.npy`` header) of
token ids (``dtype``, here uint32 since Llama-3 ids exceed uint16) and, through
``label_mask_paths``, a bool array aligned with the tokens (``get_labels`` masks, then shifts). The
padded dataset cuts the stream into documents; inferring them from the array splits at every
``eos_token_id``, and a Llama-3 conversation holds one ``<|eot_id|>`` per turn (and a truncated one
may end without any), so this export also writes the authoritative boundaries as
``token_ids_part_NNNN.csv.gz`` (``start,end`` per conversation), which OLMo-core reads when
``OLMO_DATA_PREP_USE_ARRAY_IF_LOCAL=metadata``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from sftdata.constants import IGNORE_INDEX
from sftdata.export.options import ExportOptions
from sftdata.export.source import Source, iter_rows
from sftdata.stages.write.arrow import atomic_write_bytes


def write_olmo(source: Source, folder: Path, opts: ExportOptions) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"rows": 0, "conversations": 0, "tokens": 0, "trained_tokens": 0, "token_files": [],
              "label_mask_files": [], "dtype": "uint32"}
    for part, (_, rows) in enumerate(iter_rows(source)):
        tokens = f"token_ids_part_{part:04d}.npy"
        mask = f"labels_mask_part_{part:04d}.npy"
        trained = rows.labels != IGNORE_INDEX
        atomic_write_bytes(folder / tokens, rows.input_ids.astype(np.uint32).tobytes())
        atomic_write_bytes(folder / mask, trained.astype(np.bool_).tobytes())
        seg = rows.segments
        lines = "".join(f"{int(s)},{int(e)}\n" for s, e in zip(seg[:-1], seg[1:], strict=True))
        atomic_write_bytes(folder / tokens.replace(".npy", ".csv.gz"), gzip.compress(lines.encode(), mtime=0))
        counts["token_files"].append(tokens)
        counts["label_mask_files"].append(mask)
        counts["rows"] += len(seg) - 1
        counts["conversations"] += len(seg) - 1
        counts["tokens"] += len(rows.input_ids)
        counts["trained_tokens"] += int(trained.sum())
        del rows, trained  # before the next shard is read
    return counts
