"""Finishing a held chunk of ``dedupe: exact`` once the whole input's duplicates are known
(``sftdata.process.held`` says why chunks are held): renamed into place when the plan drops what
the chunk dropped, rewritten from its held files when it drops more, processed again from its
input when its held files cannot be trusted.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from sftdata.config import Settings
from sftdata.process.chunk import (
    ChunkResult,
    _QuarantinePart,
    clean_chunk_leftovers,
    duplicate_rejection,
    process_chunk,
    publish_chunk,
)
from sftdata.process.held import DROPPED, REJECTED, SPECIAL, TRUNCATED, WRITTEN, Held, read_held, remove_held
from sftdata.process.record import RecordProcessor
from sftdata.stages.pack import PACKED_SCHEMA, Packer
from sftdata.stages.read.jsonl import Chunk
from sftdata.stages.write.arrow import BASE_SCHEMA, ShardWriter
from sftdata.storage import Folder
from sftdata.storage.atomic import fsync_dir
from sftdata.storage.layout import chunk_quarantine, held_quarantine, shard_name


def finish_chunk(chunk: Chunk, settings: Settings, location: str, processor: RecordProcessor,
                 drops: dict[int, str] | None, run_id: str, attempt: str, sync: bool) -> ChunkResult:
    """Chunk ``chunk``, held by ``attempt``, with ``drops`` (its lines -> the first each duplicates,
    for the whole input), committed with its done-marker; returns its result."""
    folder = Folder(location)
    staging = folder.staging()
    held = read_held(staging, chunk.index, attempt)
    if held is None:  # held elsewhere, or not whole: from the input, as the hash-first way did
        clean_chunk_leftovers(location, chunk.index)
        remove_held(staging, chunk.index)
        return process_chunk(chunk, settings, location, processor, drops, run_id, sync)
    drops = drops or {}
    if settings.packing != "bfd" and held.dropped() == drops:
        result = _rename(staging, chunk.index, held, sync)
    else:
        result = _rewrite(chunk, settings, staging, held, drops, sync)
    remove_held(staging, chunk.index)
    publish_chunk(folder, result, sync)
    return result


def _rename(staging: Path, index: int, held: Held, sync: bool) -> ChunkResult:
    """The held files under their final names: the plan drops what the chunk dropped."""
    result = ChunkResult.from_json(held.result)
    for part, shard in enumerate(result.shards):
        final = shard_name(index, part)
        os.replace(staging / shard.file, staging / final)
        shard.file = final
    os.replace(staging / held_quarantine(index), staging / chunk_quarantine(index))
    if sync:
        fsync_dir(staging)
        fsync_dir((staging / chunk_quarantine(index)).parent)
    return result


def _rewrite(chunk: Chunk, settings: Settings, staging: Path, held: Held, drops: dict[int, str],
             sync: bool) -> ChunkResult:
    """The chunk's rows and quarantine part again from its held files, without the records the
    plan drops (a dropped record's quarantine line made as the hold pass makes one); the counters
    that depend on what is written are counted again, the others are the hold pass's."""
    result = ChunkResult.from_json(held.result)
    result.rejected, result.hashes, result.truncated_ids, result.dropped_duplicates = Counter(), [], [], []
    hit = (held.kind != REJECTED) & np.isin(held.line, np.fromiter(drops, dtype=np.int64, count=len(drops)))
    written = held.kind == WRITTEN
    keep = np.flatnonzero(~hit[written])  # the held rows written again
    packer = Packer(settings.max_length) if settings.packing == "bfd" else None
    schema = BASE_SCHEMA if packer is None else PACKED_SCHEMA
    maps = [pa.memory_map(str(staging / s.file)) for s in result.shards]
    try:
        rows = _HeldRows(maps)
        with ShardWriter(staging, chunk.index, settings.shard_size, schema, sync=sync) as writer, \
                contextlib.nullcontext() if packer is None else packer, \
                _QuarantinePart(chunk, result, staging / chunk_quarantine(chunk.index)) as quarantine:
            _quarantine(chunk, held, np.flatnonzero(~written | hit), hit, drops, quarantine,
                        staging / held_quarantine(chunk.index))
            if packer is not None:
                for i in keep.tolist():
                    packer.add(*rows.row(i))
                packer.write(writer)
            else:
                writer.write_rows(rows.offsets, rows.tokens, rows.labels, keep, {
                    "id": [rows.ids[i] for i in keep.tolist()], "content_hash": [rows.hashes[i] for i in keep.tolist()],
                    "prompt_hash": [rows.prompts[i] for i in keep.tolist()]})
            result.shards = writer.finish()
            quarantine.commit(sync)
        _count(result, rows, keep, held.flags[written][keep])
    finally:
        for m in maps:
            m.close()
    return result


def _quarantine(chunk: Chunk, held: Held, entries: np.ndarray, hit: np.ndarray, drops: dict[int, str],
                quarantine: _QuarantinePart, old_part: Path) -> None:
    """The quarantine part of a rewritten chunk: the held part's lines in order, a record the plan
    drops replaced by (or, for a held row, given) its duplicate line."""
    at = pa.Array.from_buffers(pa.int64(), len(entries), [None, pa.py_buffer(entries.astype(np.int64))])
    ids, raws, notes = (held.batch.column(k).take(at).to_pylist() for k in ("id", "raw", "note"))
    with open(old_part, "rb") as lines:
        for j, i in enumerate(entries.tolist()):
            kind, line = int(held.kind[i]), int(held.line[i])
            old = lines.readline() if kind != WRITTEN else b""
            if hit[i]:
                first = drops[line]
                quarantine.result.dropped_duplicates.append((ids[j], first))
                quarantine.add(duplicate_rejection(chunk.name, line, ids[j], raws[j], first))
            elif kind == DROPPED:
                raise RuntimeError(f"chunk {chunk.index}: line {line} was dropped, the plan keeps it")
            else:
                quarantine.add_line(old, notes[j])


def _count(result: ChunkResult, rows: _HeldRows, keep: np.ndarray, flags: np.ndarray) -> None:
    """The counters of the rows written again (``flags``: theirs, ``held.SPECIAL``/``TRUNCATED``)."""
    lengths = rows.offsets[keep + 1] - rows.offsets[keep]
    ids = [rows.ids[i] for i in keep.tolist()]
    result.records_written = len(keep)
    result.tokens = int(lengths.sum())
    result.trained_tokens = int(sum(s.trained_tokens for s in result.shards)) if result.shards else 0
    result.special_text_records = int(np.count_nonzero(flags & SPECIAL))
    result.hashes = [(rows.hashes[i], rid) for i, rid in zip(keep.tolist(), ids, strict=True)]
    result.truncated_ids = [rid for rid, f in zip(ids, (flags & TRUNCATED).tolist(), strict=True) if f]


class _HeldRows:
    """Every held row of a chunk as columns: ids and hashes as lists; tokens and labels as one
    array each (copied out of the held shards' mapped batches), row ``i``'s at
    ``offsets[i]:offsets[i + 1]``."""

    def __init__(self, maps: list[pa.MemoryMappedFile]) -> None:
        self.ids: list[str] = []
        self.hashes: list[str] = []
        self.prompts: list[str] = []
        offsets, tokens, labels = [np.zeros(1, dtype=np.int64)], [], []
        for source in maps:
            for batch in pa.ipc.open_stream(source):
                self.ids += batch.column("id").to_pylist()
                self.hashes += batch.column("content_hash").to_pylist()
                self.prompts += batch.column("prompt_hash").to_pylist()
                io, iv = _list(batch.column("input_ids"))
                lo, lv = _list(batch.column("labels"))
                offsets.append(io[1:] - io[0] + offsets[-1][-1])
                tokens.append(iv[io[0]:io[-1]])
                labels.append(lv[lo[0]:lo[-1]])
        self.offsets = np.concatenate(offsets)
        self.tokens = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int32)
        self.labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int32)

    def row(self, i: int) -> tuple[str, np.ndarray, np.ndarray, str, str]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.ids[i], self.tokens[a:b], self.labels[a:b], self.hashes[i], self.prompts[i]


def _list(arr: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    values = arr.values
    return offsets, np.frombuffer(values.buffers()[1], dtype=np.int32, count=len(values), offset=values.offset * 4)
