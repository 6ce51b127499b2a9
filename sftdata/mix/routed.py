"""The main pass of a mix from a chunk's staged rows (``sftdata.mix.staged``): the routed rows
into their split's folder, the rejections and drops into the quarantine, committed like
``process_chunk`` (done-markers last); and the pieces the pass from the input shares with it.

Why columns: a chunk's staged rows are routed with numpy (a route is a chunk's sorted lines), so
Python touches a row only to hand it to the shard writer; the few rows written one by one
(rejections, drops, unknown keys) are walked in input order, which keeps the quarantine's order
and the unknown-key counts (capped, so order-dependent) those of the pass from the input.
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack

import numpy as np
import orjson
import pyarrow as pa

from sftdata.config import Settings
from sftdata.faults import fault_point
from sftdata.mix.decide import Drop, Route
from sftdata.mix.staged import ENCODED, REJECTED, Staged, item_picks
from sftdata.process.chunk import ChunkResult, _Quarantine
from sftdata.stages.adapt.keys import count_names
from sftdata.stages.read.jsonl import Chunk
from sftdata.stages.records import Reject
from sftdata.stages.write.arrow import MIX_SCHEMA, ShardWriter, _int32_array, _string_array, row_bytes
from sftdata.storage import Folder, work_dir
from sftdata.storage.atomic import atomic_write_bytes
from sftdata.storage.layout import chunk_marker, chunk_quarantine

SIDES = ("train", "eval")  # a route's side 0 and 1; a run without a split has one folder, ``train``


def mix_staged(chunk: Chunk, digest: str, staged: Staged, settings: Settings, locations: dict[str, str],
               route: Route | None, drops: dict[int, Drop], run_ids: dict[str, str],
               sync: bool = True) -> dict[str, ChunkResult]:
    """``mix_chunk`` from the chunk's staged rows: the same files, same bytes."""
    first = next(iter(locations))
    results = {name: ChunkResult(chunk.index, run_id=run_ids[name], input_digest=digest) for name in locations}
    quarantine = _Quarantine(chunk, results[first])
    pos, hit = _lookup(route, staged.line)
    side = np.where(route.to_eval[pos], 1, 0) if route is not None and len(route.lines) else np.zeros(len(pos), int)
    dropped = np.isin(staged.line, np.fromiter(drops, dtype=np.int64, count=len(drops)))
    encoded = staged.kind == ENCODED
    unknown = np.diff(staged.offsets("unknown_keys")) > 0
    with ExitStack() as stack:
        writers = _writers(stack, chunk, settings, locations, sync)
        for i in np.flatnonzero((staged.kind == REJECTED) | dropped | (hit & (~encoded | unknown))).tolist():
            if staged.kind[i] == REJECTED:
                results[first].records_read += 1
                results[first].rejected[staged.value("reason", i)] += 1
                quarantine.lines.append(staged.value("quarantine", i))
            elif dropped[i]:
                _drop(results[first], quarantine, drops[int(staged.line[i])], staged.value("id", i),
                      int(staged.line[i]), staged.value("raw", i))
            else:
                if unknown[i]:
                    count_names(results[SIDES[side[i]]].unknown_keys, tuple(staged.value("unknown_keys", i)))
                if not encoded[i]:
                    results[first].records_read += 1
                    results[first].rejected[staged.value("reason", i)] += 1
                    quarantine.lines.append(staged.value("quarantine", i))
        for k, name in enumerate(SIDES):
            if name not in locations:
                continue
            rows = np.flatnonzero(hit & encoded & ~dropped & (side == k))
            _write_rows(results[name], writers[name], staged, rows, route.copies[pos[rows]] if len(rows) else rows,
                        chunk.source)
        for name, writer in writers.items():
            results[name].shards = writer.finish()
    results[first].blank_lines = staged.blank_lines
    fault_point("worker_chunk")
    for name, location in locations.items():
        commit_chunk(Folder(location), results[name], quarantine.to_bytes() if name == first else b"", sync)
    return results


def _lookup(route: Route | None, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(place in the route, routed?) of each staged row."""
    if route is None or not len(route.lines):
        return np.zeros(len(lines), dtype=np.int64), np.zeros(len(lines), dtype=bool)
    pos = np.minimum(np.searchsorted(route.lines, lines), len(route.lines) - 1)
    return pos, route.lines[pos] == lines


def _write_rows(result: ChunkResult, writer: ShardWriter, staged: Staged, rows: np.ndarray, copies: np.ndarray,
                source: str) -> None:
    """``copies`` rows of each staged row ``rows`` (input order): the first with its id, the others
    ``<id>#r2``, ``<id>#r3``...; in the batches ``writer.add`` would make, counted as ``mix_chunk``
    counts them. Columns are gathered from the staged ones with numpy (no Python object per row)."""
    if not len(rows):
        return
    copies = copies.astype(np.int64)
    each = np.repeat(rows, copies)  # a staged row per written row
    ids = _Ids(staged, each, copies)
    toff, tval = staged.lists("input_ids")
    _, lval = staged.labels()
    lengths = np.diff(toff)[each]
    ends = np.cumsum(row_bytes(lengths, ids.chars))
    hashes = staged.text("content_hash"), staged.text("prompt_hash")
    named = _constant(source)
    start = 0
    while start < len(each):  # a batch ends at the row that brings the buffer to the limit
        end = min(int(np.searchsorted(ends, (ends[start - 1] if start else 0) + writer.batch_limit)), len(each) - 1)
        part = each[start:end + 1]
        tokens, labels = _gather(toff, (tval, lval), part)  # the labels' offsets are the ids'
        batch = pa.RecordBatch.from_arrays([
            ids.array(start, end + 1), tokens, labels, *(h.take(part) for h in hashes), named(len(part))],
            schema=MIX_SCHEMA)
        trained = staged.numbers("trained")[part]
        writer.write_batch(batch, int(lengths[start:end + 1].sum()), int(trained.sum()))
        start = end + 1
    names, ch = staged.strings("id"), staged.strings("content_hash")
    result.hashes += [(ch[i], names[i]) for i in rows.tolist()]  # copies are not duplicates
    result.truncated_ids += ids.strings(np.flatnonzero(staged.numbers("truncated")[each]))
    total = len(each)
    result.records_read += total
    result.records_written += total
    result.tokens += int(lengths.sum())
    result.trained_tokens += int((staged.numbers("trained")[rows] * copies).sum())
    result.special_text_records += int((staged.numbers("special")[rows] * copies).sum())


def _gather(offsets: np.ndarray, columns: tuple[np.ndarray, ...], rows: np.ndarray) -> list[pa.ListArray]:
    """The lists of ``rows`` of each of ``columns`` (list columns sharing ``offsets``) as list
    columns, built as ``ShardWriter`` builds its columns; the rows' places are found once for all."""
    out, picks = item_picks(offsets, rows)
    new_offsets = _int32_array(out)
    return [pa.ListArray.from_arrays(new_offsets, _int32_array(values[picks])) for values in columns]


class _Ids:
    """The ids of the written rows (``each``: a staged row per written row, ``copies`` per routed
    row): gathered from the staged column where every row is written once and the ids are ASCII
    (a character is a byte: ``row_bytes`` counts characters), else built as strings."""

    def __init__(self, staged: Staged, each: np.ndarray, copies: np.ndarray) -> None:
        text = staged.text("id")
        self.each, self.text, self.names = each, text, None
        if (copies == 1).all() and text.ascii:
            self.chars = np.diff(text.offsets)[each]
            return
        names = staged.strings("id")
        k = np.arange(len(each)) - np.repeat(np.cumsum(copies) - copies, copies) + 1  # each row's copy number
        self.names = [names[i] if c == 1 else f"{names[i]}#r{c}" for i, c in zip(each.tolist(), k.tolist(), strict=True)]
        self.chars = np.fromiter(map(len, self.names), dtype=np.int64, count=len(self.names))

    def array(self, start: int, end: int) -> pa.Array:
        if self.names is not None:
            return _string_array(self.names[start:end])
        return self.text.take(self.each[start:end])

    def strings(self, rows: np.ndarray) -> list[str]:
        if self.names is not None:
            return [self.names[i] for i in rows.tolist()]
        return [self.text.string(int(self.each[i])) for i in rows.tolist()]


def _constant(value: str):
    """A function of ``n``: a string column of ``n`` times ``value``."""
    data = value.encode("utf-8")

    def column(n: int) -> pa.Array:
        offsets = np.arange(n + 1, dtype=np.int32) * len(data)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))
    return column


def _writers(stack: ExitStack, chunk: Chunk, settings: Settings, locations: dict[str, str],
             sync: bool) -> dict[str, ShardWriter]:
    writers = {}
    for name, location in locations.items():
        work_dir(Folder(location))
        writers[name] = stack.enter_context(ShardWriter(Folder(location).staging(), chunk.index,
                                                        settings.shard_size, MIX_SCHEMA, sync=sync))
    return writers


def _drop(result: ChunkResult, quarantine: _Quarantine, drop: Drop, rid: str, line: int, raw: bytes) -> None:
    result.records_read += 1
    if drop.reason == "duplicate":
        result.dropped_duplicates.append((rid, drop.extra["duplicate_of"]))
    stage = "dedupe" if drop.reason == "duplicate" else "decontaminate"
    quarantine.add_exc(Reject(drop.reason, drop.message, ""), stage, line, rid, raw, **drop.extra)


def commit_chunk(folder: Folder, result: ChunkResult, part: bytes, sync: bool) -> None:
    """A chunk's quarantine part and done-marker (last) in one folder, then published."""
    out = folder.staging()
    result.quarantine_sha256 = hashlib.sha256(part).hexdigest()
    if result.has_quarantine_part:  # an empty part (every eval folder's) is not written
        atomic_write_bytes(out / chunk_quarantine(result.index), part, sync=sync)
    atomic_write_bytes(out / chunk_marker(result.index), orjson.dumps(result.to_json()), sync=sync)
    folder.publish_staged([*result.files(), chunk_marker(result.index)])
