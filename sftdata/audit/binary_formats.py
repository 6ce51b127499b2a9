"""Two token formats that are not Arrow: MosaicML MDS shards of LLM Foundry ``turns``, and OLMo-core memmaps.

Why read them here instead of through their packages: neither ``mosaicml-streaming`` nor
``ai2-olmo-core`` is in the audit's environment (and importing either would cost the start-up
time that CI pays), and both layouts are small and fixed. Each part becomes a table of
``input_ids`` and ``labels_mask`` that `sftdata.audit.columns` checks like any other.

* MDS (streaming's ``MDSWriter``, version 2, no compression): ``uint32 samples``, ``uint32
  offsets[n + 1]``, the JSON config, then per sample ``uint32 size`` and the JSON of its ``turns``
  column: ``[{"input_ids": context, "labels": response}, ...]``. Every response is taken as trained,
  which is LLM Foundry's ``target_responses: all``; its default, ``last``, trains only the last one.
* OLMo-core: ``token_ids_part_NNNN.npy`` and ``labels_mask_part_NNNN.npy`` are raw memmaps (no
  ``.npy`` header) of the ids and a bool mask aligned with them; ``token_ids_part_NNNN.csv.gz``
  holds ``start,end`` per document. Without it, documents start at every ``<|begin_of_text|>``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from sftdata.audit.integrity import AuditError
from sftdata.errors import UnsafeFileError
from sftdata.storage.layout import check_names
from sftdata.storage.opener import open_regular, read_json, read_regular

MDS_INDEX = "index.json"
OLMO_TOKENS = "token_ids_part_*.npy"


def mds_shards(folder: Path) -> list[str] | None:
    """The shard files an MDS ``index.json`` lists, or None when the folder is not MDS."""
    if not (folder / MDS_INDEX).exists():
        return None
    try:
        index = read_json(folder / MDS_INDEX)  # the one opener: a FIFO or /dev/zero is refused
        shards = index["shards"]
        if not all(s.get("format") == "mds" for s in shards):
            return None
    except UnsafeFileError as exc:
        raise AuditError(str(exc)) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    for s in shards:
        if s.get("compression") or s.get("column_names") != ["turns"] or s.get("column_encodings") != ["json"]:
            raise AuditError(f"{folder}: MDS shard {s.get('raw_data', {}).get('basename')}: only uncompressed "
                             "LLM Foundry shards with one json `turns` column can be audited")
    try:
        return check_names([(s.get("raw_data") or {}).get("basename") for s in shards], str(folder / MDS_INDEX))
    except UnsafeFileError as exc:
        raise AuditError(str(exc)) from None


def _int_lists(rows: list[list[int]], dtype: type) -> pa.Array:
    lens = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    offs = np.zeros(len(rows) + 1, np.int32)
    np.cumsum(lens, out=offs[1:])
    return _lists(offs, np.fromiter((x for r in rows for x in r), dtype, int(offs[-1])))


def read_mds(path: str) -> pa.Table:
    data = read_regular(path, limit=None)  # a data file: no metadata cap, but a regular file only
    try:
        n = int(np.frombuffer(data, np.uint32, 1)[0])
        offs = np.frombuffer(data, np.uint32, n + 1, 4)
        ids, mask = [], []
        for a, b in zip(offs[:-1].tolist(), offs[1:].tolist(), strict=True):
            turns = json.loads(data[a + 4:b])
            ids.append([t for turn in turns for t in (*turn["input_ids"], *turn["labels"])])
            mask.append([m for turn in turns for m in (*([0] * len(turn["input_ids"])), *([1] * len(turn["labels"])))])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise AuditError(f"{path}: not an MDS shard of LLM Foundry turns: {exc}") from exc
    return pa.table({"input_ids": _int_lists(ids, np.int64), "labels_mask": _int_lists(mask, np.int8)})


def read_olmo(path: str, bos_id: int | None) -> pa.Table:
    token_file = Path(path)
    mask_file = token_file.with_name(token_file.name.replace("token_ids_", "labels_mask_"))
    if not mask_file.is_file():
        raise AuditError(f"{token_file}: no {mask_file.name} beside it (OLMo-core's label mask)")
    mask = np.fromfile(mask_file, np.uint8)
    width = token_file.stat().st_size // max(len(mask), 1)
    dtype = {2: np.uint16, 4: np.uint32, 8: np.uint64}.get(width)
    if dtype is None or token_file.stat().st_size != width * len(mask):
        raise AuditError(f"{token_file}: {token_file.stat().st_size} bytes for {len(mask)} mask entries: "
                         "not a token memmap aligned with its label mask")
    ids = np.fromfile(token_file, dtype).astype(np.int64)
    bounds_file = token_file.with_name(token_file.name[: -len(".npy")] + ".csv.gz")
    if bounds_file.is_file():
        with open_regular(bounds_file) as raw, gzip.open(raw, "rt") as f:  # the one opener: regular files only
            starts = [int(line.split(",")[0]) for line in f if line.strip()]
    else:
        starts = np.flatnonzero(ids == bos_id).tolist() if bos_id is not None else []
    offs = np.unique(np.asarray([0, *starts, len(ids)], np.int64)).astype(np.int32)
    return pa.table({"input_ids": _lists(offs, ids), "labels_mask": _lists(offs, mask.astype(np.int8))})


def _lists(offs: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(_arrow(offs), _arrow(values))


def _arrow(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])
