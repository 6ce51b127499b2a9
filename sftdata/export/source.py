"""Reading a prepared folder for export: the audit gate, the manifest, and shards as flat arrays.

Why flat numpy arrays: every target is a relabelling of the same token stream (unpacking is new
offsets over the same values, torchtune's shift is one slice, Megatron's rolled mask another), so
converting offsets + values once per shard keeps export a small fraction of ``run``'s cost and its
memory bounded by one shard, never by the data size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sftdata.constants import IGNORE_INDEX
from sftdata.errors import ExportError, UnsafeFileError  # noqa: F401 - ExportError's home was here
from sftdata.storage.layout import MANIFEST_NAME, manifest_shard_names
from sftdata.storage.opener import map_regular, read_regular, release_pages


@dataclass(frozen=True)
class Source:
    path: Path
    manifest: dict
    manifest_sha256: str
    packed: bool
    max_length: int | None
    pad_id: int

    @property
    def shards(self) -> list[str]:
        """The shard names, each a plain shard name listed once (checked when the source was opened)."""
        return manifest_shard_names(self.manifest["shards"], str(self.path / MANIFEST_NAME))


@dataclass(frozen=True)
class Rows:
    """One shard's rows: ``offsets`` (rows + 1) into the flat ``input_ids``/``labels``, and the
    conversation boundaries ``segments`` (conversations + 1, a superset of ``offsets``). The token
    ids and labels are kept as the shard holds them, one view of the map per record batch
    (``id_parts``, ``label_parts``); ``input_ids`` and ``labels`` join them on first use, a copy
    only when the shard has several batches (a writer that streams reads the parts)."""

    id_parts: tuple[np.ndarray, ...]
    label_parts: tuple[np.ndarray, ...]
    offsets: np.ndarray
    segments: np.ndarray
    table: pa.Table
    mapped: Any = field(default=None, compare=False)  # the shard's memory map (``release_pages``)

    @cached_property
    def input_ids(self) -> np.ndarray:
        return _joined(self.id_parts)

    @cached_property
    def labels(self) -> np.ndarray:
        return _joined(self.label_parts)

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    def trained(self) -> int:
        """Trained labels, counted a block at a time, each block's mapped pages let go once counted."""
        total, block = 0, 1 << 20
        for part in self.label_parts:
            for a in range(0, len(part), block):
                total += trained_count(part[a:a + block])
                if self.mapped is not None:
                    release_pages(self.mapped)
        return total

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    def positions(self) -> np.ndarray:
        """Position of every token within its conversation (restarting at 0 per segment)."""
        lens = np.diff(self.segments)
        return np.arange(len(self.input_ids), dtype=np.int64) - np.repeat(self.segments[:-1], lens)

    def segment_ids(self) -> np.ndarray:
        """1..k within each row, numbering that row's conversations (LLaMA-Factory's neat packing)."""
        seg_of_token = np.repeat(np.arange(len(self.segments) - 1), np.diff(self.segments))
        first_seg_of_row = np.searchsorted(self.segments, self.offsets[:-1])
        row_of_token = np.repeat(np.arange(self.rows), np.diff(self.offsets))
        return (seg_of_token - first_seg_of_row[row_of_token] + 1).astype(np.int32)


def _audit_gate(path: Path) -> None:
    from sftdata.audit.integrity import AuditError
    from sftdata.audit.run import run_audit

    try:
        report = run_audit(path)
    except AuditError as exc:
        raise ExportError(str(exc)) from None
    if not report.ok:
        raise ExportError(f"{path} fails the audit (rules: {', '.join(report.failed_rules())}); "
                          "run `sftdata audit` on it, or pass --skip-audit to export anyway")


def open_source(path: str | Path, *, skip_audit: bool = False) -> Source:
    """The prepared folder at ``path``, after it passes the audit unless ``skip_audit``."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not path.is_dir():
        raise ExportError(f"{path}: no such folder")
    if not manifest_path.exists():
        raise ExportError(f"{path}: no manifest.json (not a finished `sftdata run` output folder)")
    try:
        raw = read_regular(manifest_path)  # the one opener: a regular file, at most the metadata limit
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{manifest_path}: cannot read the manifest: {exc}") from None
    except UnsafeFileError as exc:
        raise ExportError(str(exc)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != "sftdata-shards" \
            or not isinstance(manifest.get("shards"), list):
        raise ExportError(f"{manifest_path}: not an sftdata-shards manifest")
    try:  # before the audit and before any shard is opened (--skip-audit included)
        manifest_shard_names(manifest["shards"], str(manifest_path))
    except UnsafeFileError as exc:
        raise ExportError(str(exc)) from None
    if not skip_audit:
        _audit_gate(path)
    pipeline = manifest.get("pipeline") or {}
    max_length = pipeline.get("max_length") if isinstance(pipeline.get("max_length"), int) else None
    packed = bool(manifest.get("packing")) or "seq_lengths" in (manifest.get("columns") or [])
    pad_id = (manifest.get("tokenizer") or {}).get("pad_id")
    return Source(path=path, manifest=manifest, manifest_sha256=hashlib.sha256(raw).hexdigest(), packed=packed,
                  max_length=max_length, pad_id=int(pad_id) if isinstance(pad_id, int) else 0)


def _joined(parts: tuple[np.ndarray, ...]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.int32)


def _flat(column: pa.ChunkedArray | pa.Array) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """(values per chunk, offsets from 0 over all chunks) of a list column: the values are views of
    the mapped shard (int32 as written; other integer types converted, as before)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts, offsets, base = [], [np.zeros(1, np.int64)], 0
    for arr in chunks:
        offs = np.asarray(arr.offsets, dtype=np.int64)
        values = np.asarray(arr.values.to_numpy(zero_copy_only=False))[offs[0]:offs[-1]]
        parts.append(values.astype(np.int32, copy=False))
        offsets.append(offs[1:] - offs[0] + base)
        base += int(offs[-1] - offs[0])
    return tuple(parts), np.concatenate(offsets)


def read_rows(source: Source, name: str) -> Rows:
    return _map_rows(source, name)[0]


def _map_rows(source: Source, name: str) -> tuple[Rows, object]:
    try:
        mapped = map_regular(source.path / name)
    except UnsafeFileError as exc:
        raise ExportError(str(exc)) from None
    rows = _rows_of(source, name, pa.ipc.open_stream(pa.py_buffer(mapped)).read_all(), mapped)
    release_pages(mapped)  # what was read to check and combine the columns; the views read theirs again
    return rows, mapped


def _rows_of(source: Source, name: str, table: pa.Table, mapped: Any = None) -> Rows:
    ids, offsets = _flat(table.column("input_ids"))
    labels, label_offsets = _flat(table.column("labels"))
    if not np.array_equal(offsets, label_offsets):
        raise ExportError(f"{source.path / name}: input_ids and labels differ in length")
    if "seq_lengths" in table.column_names:
        lens = _joined(_flat(table.column("seq_lengths"))[0])
        segments = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])
        if segments[-1] != offsets[-1] or not np.isin(offsets, segments).all():
            raise ExportError(f"{source.path / name}: seq_lengths do not add up to the rows' lengths")
    else:
        segments = offsets
    return Rows(id_parts=ids, label_parts=labels, offsets=offsets, segments=segments, table=table, mapped=mapped)


def iter_rows(source: Source) -> Iterator[tuple[str, Rows]]:
    """Each shard's rows in manifest order. Once the caller asks for the next shard, the pages of
    the one it had are let go (and what Arrow's pool kept), so an export holds one shard's pages,
    not every shard's read so far."""
    from sftdata.interrupts import check_interrupted
    from sftdata.storage.opener import release_arrow_memory

    for name in source.shards:
        check_interrupted()
        rows, mapped = _map_rows(source, name)
        yield name, rows
        del rows
        release_pages(mapped)
        release_arrow_memory()


def list_array(values: np.ndarray, offsets: np.ndarray, dtype: pa.DataType = pa.int32()) -> pa.ListArray:
    """A list<dtype> array straight from numpy buffers (no Python lists)."""
    np_type = {pa.int32(): np.int32, pa.int8(): np.int8, pa.int64(): np.int64}[dtype]
    vals = np.ascontiguousarray(values, dtype=np_type)
    flat = pa.Array.from_buffers(dtype, len(vals), [None, pa.py_buffer(vals)])
    offs = np.ascontiguousarray(offsets, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.Array.from_buffers(pa.int32(), len(offs), [None, pa.py_buffer(offs)]), flat)


def trained_count(labels: np.ndarray) -> int:
    return int(np.count_nonzero(labels != IGNORE_INDEX))


def tally(counts: dict, rows_written: int, rows: Rows, trained: int | None = None) -> None:
    """Add one written batch to an export's counts (the export manifest's rows, conversations,
    tokens, trained tokens); ``trained`` when the target counts trained positions its own way."""
    counts["rows"] += rows_written
    counts["conversations"] += len(rows.segments) - 1
    counts["tokens"] += rows.tokens
    counts["trained_tokens"] += rows.trained() if trained is None else trained
