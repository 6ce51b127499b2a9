"""Parquet files and Hugging Face ``datasets`` folders (``save_to_disk``) as record streams.

Nested ``messages`` columns arrive as Arrow structs and lists; they are turned into plain Python
objects one record batch at a time, so memory is bounded by a batch, not the file. A Parquet row
group or a dataset's Arrow file is one unit of work, which keeps the plan deterministic.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa

from sftdata.readers.jsonl import Chunk
from sftdata.readers.remote import open_parquet

BATCH_ROWS = 1024


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def hf_dataset_files(path: Path) -> list[Path]:
    state = json.loads((path / "state.json").read_text())
    return [path / f["filename"] for f in state.get("_data_files", [])]


def plan_parquet(path: Path, start_index: int, name: str) -> list[Chunk]:
    with open_parquet(str(path.resolve())) as f:
        meta = f.metadata
    chunks, row = [], 1
    for rg in range(meta.num_row_groups):
        chunks.append(Chunk(start_index + len(chunks), str(path.resolve()), name, rg, rg + 1, row, "parquet"))
        row += meta.row_group(rg).num_rows
    return chunks


def plan_hf_dataset(path: Path, start_index: int) -> list[Chunk]:
    chunks, row = [], 1
    for f in hf_dataset_files(path):
        rows = _arrow_rows(f)
        chunks.append(Chunk(start_index + len(chunks), str(f.resolve()), f"{path.name}/{f.name}", 0, rows, row,
                            "hf_dataset"))
        row += rows
    return chunks


def _arrow_rows(path: Path) -> int:
    with pa.memory_map(str(path)) as src:
        return sum(b.num_rows for b in pa.ipc.open_stream(src))


def _clean(value):
    """Arrow fills absent struct fields with nulls; drop them so they look like the JSON source."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None or k == "content"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def iter_columnar(chunk: Chunk) -> Iterator[tuple[int, object, bytes]]:
    """(row number, record object, original as JSON bytes) for each row of the chunk."""
    row = chunk.first_line
    with contextlib.ExitStack() as stack:
        if chunk.kind == "parquet":
            f = stack.enter_context(open_parquet(chunk.path))
            batches = f.iter_batches(batch_size=BATCH_ROWS, row_groups=[chunk.start])
        else:
            batches = pa.ipc.open_stream(stack.enter_context(pa.memory_map(chunk.path)))
        for batch in batches:
            for rec in batch.to_pylist():
                obj = _clean(rec)
                yield row, obj, orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS, default=str)
                row += 1
