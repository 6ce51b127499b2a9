"""``state.json`` and ``dataset_info.json``: what lets ``datasets.load_from_disk`` open the shards.

Written without importing ``datasets`` (a second of start-up per run): the Features dict of our
columns is small and fixed, and ``state.json`` only lists the shard files in order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from sftdata.stages.write.arrow import BASE_SCHEMA, ShardRecord, ShardWriter
from sftdata.storage.atomic import atomic_write_bytes
from sftdata.storage.layout import DATASET_INFO_NAME, STATE_NAME


def _feature(t: pa.DataType) -> dict:
    if pa.types.is_list(t):
        return {"feature": _feature(t.value_type), "_type": "List"}
    return {"dtype": "string" if pa.types.is_string(t) else str(t), "_type": "Value"}


def features(schema: pa.Schema) -> dict:
    """The `datasets` (>= 4) Features dict of our columns."""
    return {f.name: _feature(f.type) for f in schema}


def write_dataset_metadata(out: Path, shards: list[ShardRecord], schema: pa.Schema = BASE_SCHEMA) -> list[ShardRecord]:
    """``state.json`` + ``dataset_info.json`` so ``datasets.load_from_disk(out)`` opens the shards.

    A run where every record was rejected still gets one empty shard, so the folder stays loadable.
    """
    if not shards:
        with ShardWriter(out, 0, 1, schema) as w:
            w._open()
            shards = w.finish()
    info = {"citation": "", "description": "Llama-3 SFT rows prepared by sftdata", "features": features(schema),
            "homepage": "", "license": ""}
    state = {
        "_data_files": [{"filename": s.file} for s in shards],
        "_fingerprint": hashlib.sha256("".join(s.sha256 for s in shards).encode()).hexdigest()[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    atomic_write_bytes(out / DATASET_INFO_NAME, json.dumps(info, indent=2, sort_keys=True).encode())
    atomic_write_bytes(out / STATE_NAME, json.dumps(state, indent=2, sort_keys=True).encode())
    return shards
