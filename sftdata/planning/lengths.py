"""Every row's length from a prepared folder, shard by shard: what ``sftdata plan`` needs, and no more.

Why not the ``datasets`` view of the folder: it maps every shard at once, and the plan kept the
lengths as int64 plus an int64 permutation and sort per candidate size, memory that grew by tens of
bytes per row. Here each shard is mapped, only its ``input_ids`` offsets are read (the token
values are never touched), and its pages are let go before the next; the lengths are kept in the
narrowest dtype that holds them (uint16 below 65,536 tokens: 2 bytes a row), and the longest rows
(with their ids) are picked as the shards go by.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sftdata.errors import TrainError


@dataclass
class FolderLengths:
    """The rows' lengths in folder order, the first shard's columns, and the ``top`` longest rows as
    (id, tokens), longest first, ties in folder order (``index N`` when the shards have no id)."""

    lengths: np.ndarray
    columns: list[str]
    longest: list[tuple[str, int]]


def _narrow(lengths: np.ndarray) -> np.ndarray:
    top = int(lengths.max(initial=0))
    return lengths.astype(np.uint16 if top < 1 << 16 else np.int32 if top < 1 << 31 else np.int64, copy=False)


def _batch_lengths(batch, where: str) -> np.ndarray:
    import pyarrow as pa

    col = batch.column("input_ids")
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise TrainError(f"{where}: input_ids is {col.type}, not a list of token ids")
    offsets = np.asarray(col.offsets)  # the offsets buffer only: no token value is read
    return np.diff(offsets)


class _Longest:
    """The ``top`` longest rows seen so far, as (-tokens, row index, id)."""

    def __init__(self, top: int) -> None:
        self.top, self.kept = top, []

    def add(self, lens: np.ndarray, base: int, ids) -> None:
        if not self.top or not len(lens):
            return
        pick = np.lexsort((np.arange(len(lens)), -lens.astype(np.int64)))[:self.top]
        names = ids.take(pick).to_pylist() if ids is not None else [None] * len(pick)
        rows = [(-int(lens[i]), base + int(i), name) for i, name in zip(pick.tolist(), names, strict=True)]
        self.kept = heapq.nsmallest(self.top, self.kept + rows)

    def result(self, with_ids: bool) -> list[tuple[str, int]]:
        return [(str(name) if with_ids else f"index {i}", -neg) for neg, i, name in sorted(self.kept)]


def read_lengths(data_dir: Path, names: list[str], top: int = 5) -> FolderLengths:
    """Lengths of the rows of the shards ``names`` (checked regular files, in ``state.json`` order)."""
    import pyarrow as pa

    from sftdata.storage.opener import map_regular, release_arrow_memory, release_pages

    parts: list[np.ndarray] = []
    columns: list[str] | None = None
    longest, rows = _Longest(top), 0
    for name in names:
        mapped = map_regular(data_dir / name, what=f"{data_dir}/{name}")
        try:
            reader = pa.ipc.open_stream(pa.py_buffer(mapped))
            columns = columns if columns is not None else list(reader.schema.names)
            if "input_ids" not in reader.schema.names:
                break
            for batch in reader:
                lens = _batch_lengths(batch, f"{data_dir}/{name}")
                ids = batch.column("id") if "id" in columns and "id" in batch.schema.names else None
                longest.add(lens, rows, ids)
                parts.append(_narrow(lens))
                rows += len(lens)
                del batch, ids
        except pa.ArrowException as exc:
            raise TrainError(f"cannot load the shards in {data_dir}: {exc}") from exc
        finally:
            reader = None
            release_pages(mapped)
            release_arrow_memory()
    columns = columns or []
    missing = [c for c in ("input_ids", "labels") if c not in columns]
    if missing or not rows:
        raise TrainError(f"{data_dir} does not hold one non-empty Dataset with input_ids and labels")
    lengths = _narrow(np.concatenate(parts)) if len(parts) > 1 else parts[0]
    return FolderLengths(lengths, columns, longest.result("id" in columns))
