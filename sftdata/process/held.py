"""``dedupe: exact`` in one processing pass: every chunk is processed once, held, then finished.

Whether a record is a later copy depends on every chunk before it, so no chunk can be final
before the whole input has been seen. Hashing the input first and processing it afterwards (the
old way) parses, adapts and validates every record twice. Instead:

1. Hold (``process_chunk`` with a ``HeldFacts``): the chunk is processed as a plain run processes
   it, except that a later copy of a record *of the same chunk* is dropped at once (naming that
   record), the rows are written unpacked under the held names (``storage.layout.held_shard``,
   ``held_quarantine``) and no done-marker is written. ``HeldFacts`` records what became of each
   record (written, encoding failed, dropped, rejected), its line, id and original text, in
   ``held_facts(C)``, written last with the pass-1 counters; the chunk's hash run (every valid
   record's content hash) goes to the driver's ``DuplicatePlan``: the same plan the hash pass gave.
2. Finish (``finish_chunk``): where the plan drops exactly the records the chunk dropped (the
   usual case: most copies sit in the chunk of their first) and nothing is packed, the held files
   are renamed to their final names. Otherwise the rows are rewritten from the held shards without
   the plan's drops (packed, with ``--packing bfd``), and the quarantine part from the held one,
   each dropped record's line made from its recorded original text: nothing is parsed or encoded
   again. The bytes are those the hash-then-process way wrote (tests compare them).

A held chunk whose files are missing or were held by another attempt (a Ray task on another node)
is processed again from its input with the plan: the same bytes, the old cost.
"""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from sftdata.stages.write.arrow import _string_array, binary_array
from sftdata.storage.atomic import atomic_replace, temp_path
from sftdata.storage.layout import held_facts, held_quarantine, held_shard

WRITTEN, FAILED, DROPPED, REJECTED = 0, 1, 2, 3  # what became of a record
SPECIAL, TRUNCATED = 1, 2  # a written row's flags

FACTS_SCHEMA = pa.schema([("kind", pa.int32()), ("line", pa.int64()), ("flags", pa.int32()), ("id", pa.string()),
                          ("note", pa.string()), ("raw", pa.large_binary())])
# ``note``: the reason of a rejected or failed record, the first's id for a dropped one


class HeldFacts:
    """One chunk's records as the hold pass left them, in input order (what ``finish_chunk`` needs
    to rewrite the chunk without reading its input again), and the chunk's hash run."""

    def __init__(self) -> None:
        self.kind, self.line, self.flags = array("i"), array("q"), array("i")
        self.ids: list[str] = []
        self.notes: list[str] = []
        self.raws: list[bytes] = []
        self.run: list[tuple[int, str, str]] = []  # (line, content hash, id) of every valid record
        self._firsts: dict[str, str] = {}  # content hash -> id of the chunk's first record with it

    def first(self, line: int, content_hash: str, rid: str) -> str | None:
        """The id of an earlier record of the chunk with this content (None: this one is the first)."""
        self.run.append((line, content_hash, rid))
        first = self._firsts.get(content_hash)
        if first is None:
            self._firsts[content_hash] = rid
        return first

    def _add(self, kind: int, line: int, rid: str, raw: bytes, note: str, flags: int = 0) -> None:
        self.kind.append(kind)
        self.line.append(line)
        self.flags.append(flags)
        self.ids.append(rid)
        self.notes.append(note)
        self.raws.append(raw)

    def rejected(self, line: int, reason: str) -> None:
        self._add(REJECTED, line, "", b"", reason)

    def failed(self, line: int, rid: str, raw: bytes, reason: str) -> None:
        self._add(FAILED, line, rid, raw, reason)

    def dropped(self, line: int, rid: str, raw: bytes, first: str) -> None:
        self._add(DROPPED, line, rid, raw, first)

    def written(self, line: int, rid: str, raw: bytes, special: bool, truncated: bool) -> None:
        self._add(WRITTEN, line, rid, raw, "", SPECIAL * bool(special) | TRUNCATED * bool(truncated))

    def write(self, path: Path, result_json: dict, attempt: str, sync: bool) -> None:
        """The facts, written last of a held chunk's files: their presence, naming this ``attempt``,
        is what the finish trusts."""
        n = len(self.kind)
        numbers = [pa.Array.from_buffers(f.type, n, [None, pa.py_buffer(a)])
                   for f, a in zip(FACTS_SCHEMA, (self.kind, self.line, self.flags), strict=False)]
        meta = {"attempt": attempt, "result": orjson.dumps(result_json)}
        batch = pa.RecordBatch.from_arrays([*numbers, _string_array(self.ids), _string_array(self.notes),
                                            binary_array(self.raws)], schema=FACTS_SCHEMA.with_metadata(meta))
        tmp = temp_path(path)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
        atomic_replace(tmp, path, sync=sync)


class Held:
    """A held chunk read back: its facts (columns), the pass-1 result and its held files."""

    def __init__(self, batch: pa.RecordBatch, result: dict) -> None:
        self.batch, self.result = batch, result
        self.kind = _ints(batch.column("kind"))
        self.line = _ints(batch.column("line"), np.int64)
        self.flags = _ints(batch.column("flags"))

    def dropped(self) -> dict[int, str]:
        """Line -> first of every record the hold pass dropped."""
        notes = self.batch.column("note")
        return {int(self.line[i]): notes[i].as_py() for i in range(len(self.kind)) if self.kind[i] == DROPPED}


def _ints(arr: pa.Array, dtype=np.int32) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * size)


def read_held(staging: Path, index: int, attempt: str) -> Held | None:
    """Chunk ``index``'s held facts when they are whole and this attempt's, with every held file
    they name present at its size; else None (the chunk is processed again from its input)."""
    try:
        with pa.memory_map(str(staging / held_facts(index))) as source:
            reader = pa.ipc.open_file(source)
            meta = reader.schema.metadata or {}
            if meta.get(b"attempt") != attempt.encode() or reader.num_record_batches != 1:
                return None
            held = Held(reader.get_batch(0), orjson.loads(meta[b"result"]))
    except (OSError, pa.ArrowException, KeyError, orjson.JSONDecodeError):
        return None
    names = [s["file"] for s in held.result["shards"]] + [held_quarantine(index)]
    sizes = [s["bytes"] for s in held.result["shards"]] + [None]
    for name, size in zip(names, sizes, strict=True):
        try:
            if size is not None and (staging / name).stat().st_size != size:
                return None
        except OSError:
            return None
    if not (staging / held_quarantine(index)).exists():
        return None
    return held


def remove_held(staging: Path, index: int) -> None:
    """Every held file of chunk ``index`` (the facts first: without them, the rest is not trusted)."""
    (staging / held_facts(index)).unlink(missing_ok=True)
    (staging / held_quarantine(index)).unlink(missing_ok=True)
    part = 0
    while (staging / held_shard(index, part)).exists():
        (staging / held_shard(index, part)).unlink()
        part += 1
    for p in (staging / held_facts(index)).parent.glob(f".chunk-{index:06d}.held*"):
        os.unlink(p)  # temporary files of a killed attempt


__all__ = ["DROPPED", "FAILED", "Held", "HeldFacts", "REJECTED", "WRITTEN", "read_held", "remove_held"]
