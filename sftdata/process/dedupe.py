"""Content hashes and ids of every row, matched in bounded memory: external merges of per-chunk
sorted runs. Two users: the plan of ``dedupe: exact`` (``DuplicatePlan``) and the commit's lists
of duplicates and repeated ids (``RowIndex``).

Why not a dict of every hash (or a Counter of every id) in the driver: it grows with the rows (a
million rows, a few hundred MB, and forked workers inherit it). Instead each chunk's records are
sorted by key (in the worker for the dedupe pass), spilled to a temporary file as the chunk's
result arrives, and the runs are merged with ``heapq.merge``: records of one key come together,
ordered by (chunk, position in the chunk), so the first of each group is the first occurrence in
input order. Memory: one buffered line per chunk, plus what the caller keeps of the output. The
result is the one the dict gave, for any number of workers and any executor.
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

# One record of a dedupe run: (content hash, position in the chunk, line, id).
Hashed = tuple[str, int, int, str]


def sorted_hashes(records: Iterable[tuple[int, str, str]]) -> list[Hashed]:
    """A chunk's (line, hash, id) triples, in input order, as a run sorted by (hash, position)."""
    return sorted((h, pos, line, rid) for pos, (line, h, rid) in enumerate(records))


class SortedRuns:
    """Per-chunk runs of (key, position, payload), each sorted by (key, position), spilled to files
    in a temporary folder; ``merged`` yields (key, chunk, position, payload) in (key, chunk,
    position) order. Keys are hex strings (no tab, byte order = the order of what they encode)."""

    def __init__(self, prefix: str = "sftdata-runs-") -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self._runs: dict[int, Path] = {}

    def __enter__(self) -> SortedRuns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    @property
    def folder(self) -> Path:
        """The temporary folder the runs are spilled into (removed by ``close``)."""
        return Path(self._tmp.name)

    def add(self, chunk: int, run: Iterable[tuple[str, int, Any]]) -> None:
        path = self.folder / f"chunk-{chunk:06d}.run"
        with open(path, "wb") as f:
            f.writelines(b"%s\t%d\t%s\n" % (key.encode(), pos, orjson.dumps(payload)) for key, pos, payload in run)
        self._runs[chunk] = path

    @staticmethod
    def _read(path: Path, chunk: int) -> Iterator[tuple[bytes, int, int, bytes]]:
        with open(path, "rb") as f:
            for raw in f:
                key, pos, payload = raw.rstrip(b"\n").split(b"\t", 2)
                yield key, chunk, int(pos), payload

    def merged(self) -> Iterator[tuple[bytes, int, int, bytes]]:
        return heapq.merge(*(self._read(path, chunk) for chunk, path in sorted(self._runs.items())))


def _repeats(merged: Iterable[tuple[bytes, int, int, bytes]]) -> Iterator[tuple[bytes, int, int, bytes]]:
    """(first payload, chunk, position, payload) of every record whose key came before it."""
    group, first = None, b""
    for key, chunk, pos, payload in merged:
        if key != group:
            group, first = key, payload
        else:
            yield first, chunk, pos, payload


class DuplicatePlan(SortedRuns):
    """Chunks' sorted runs (``add_hashes``, in any order), then ``drops()``: per chunk, the lines to
    drop and the id of the first occurrence each one duplicates."""

    def __init__(self) -> None:
        super().__init__("sftdata-dedupe-")

    def add_hashes(self, chunk: int, run: list[Hashed]) -> None:
        self.add(chunk, ((h, pos, (line, rid)) for h, pos, line, rid in run))

    def drop_files(self) -> DropFiles:
        """The drops, one file per chunk with any (``DropFiles``): the driver keeps none of them."""
        files, buffers = DropFiles(), {}
        first_id, last = b"", b""
        for first, chunk, _pos, payload in _repeats(self.merged()):
            if first is not last:
                first_id, last = orjson.dumps(orjson.loads(first)[1]), first
            buf = buffers.setdefault(chunk, bytearray())
            buf += b"%d\t%s\n" % (orjson.loads(payload)[0], first_id)
            if len(buf) >= _FLUSH:
                files.append(chunk, buf)
        for chunk, buf in buffers.items():
            files.append(chunk, buf)
        return files

    def drops(self) -> dict[int, dict[int, str]]:
        """The drops in memory, per chunk (for an executor whose workers cannot read this machine's files)."""
        with self.drop_files() as files:
            return files.all()


_FLUSH = 1 << 15  # bytes of drops buffered per chunk before they are appended to its file


class DropFiles:
    """Per chunk, the lines ``dedupe: exact`` drops and the id each duplicates, in a file of its own
    (``line<TAB>id as JSON``) that the chunk's task reads (``get``): neither the driver nor the
    workers it forks hold the drops of the whole input. Pickles as its folder's path."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory | None = tempfile.TemporaryDirectory(prefix="sftdata-drops-")
        self.folder = self._tmp.name

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "_tmp": None}

    def __enter__(self) -> DropFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def _path(self, chunk: int) -> Path:
        return Path(self.folder, f"chunk-{chunk:06d}.drops")

    def append(self, chunk: int, buf: bytearray) -> None:
        with open(self._path(chunk), "ab") as f:
            f.write(buf)
        buf.clear()

    def get(self, chunk: int) -> dict[int, str] | None:
        path = self._path(chunk)
        if not path.exists():
            return None
        out: dict[int, str] = {}
        with open(path, "rb") as f:
            for raw in f:
                line, rid = raw.rstrip(b"\n").split(b"\t", 1)
                out[int(line)] = orjson.loads(rid)
        return out

    def all(self) -> dict[int, dict[int, str]]:
        chunks = sorted(int(p.name[6:12]) for p in Path(self.folder).glob("chunk-*.drops"))
        return {c: self.get(c) or {} for c in chunks}


class RowIndex:
    """The content hash and id of every written row, spilled per chunk as its result arrives (the
    result's ``hashes`` list is emptied): the commit's duplicates and repeated ids, in bounded memory."""

    def __init__(self) -> None:
        self.by_hash, self.by_id = SortedRuns("sftdata-hashes-"), SortedRuns("sftdata-ids-")
        self._dropped: dict[int, Path] = {}

    def __enter__(self) -> RowIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.by_hash.close()
        self.by_id.close()

    def add(self, chunk: int, hashes: list[tuple[str, str]]) -> None:
        """A chunk's (content hash, id) per written row, in row order."""
        self.by_hash.add(chunk, sorted((h, pos, rid) for pos, (h, rid) in enumerate(hashes)))
        self.by_id.add(chunk, sorted((rid.encode().hex(), pos, None) for pos, (_h, rid) in enumerate(hashes)))

    def add_dropped(self, chunk: int, dropped: list[tuple[str, str]]) -> None:
        """A chunk's rows ``dedupe: exact`` dropped, (id, id it duplicates), in input order."""
        if dropped:
            path = self._dropped[chunk] = self.by_id.folder / f"chunk-{chunk:06d}.dropped"
            path.write_bytes(b"".join(orjson.dumps(pair) + b"\n" for pair in dropped))

    def dropped(self, chunk: int) -> Iterator[tuple[str, str]]:
        path = self._dropped.get(chunk)
        if path is not None:
            with open(path, "rb") as f:
                for raw in f:
                    rid, first = orjson.loads(raw)
                    yield rid, first

    def duplicates(self) -> Iterator[tuple[str, str]]:
        """(id, id of the first row with its content) of every later row with the same content hash,
        grouped by content hash (groups in hash order; within one, in input order)."""
        for first, _chunk, _pos, payload in _repeats(self.by_hash.merged()):
            yield orjson.loads(payload), orjson.loads(first)

    def repeated_ids(self) -> Iterator[str]:
        """Every id two or more rows carry, once, sorted."""
        prev = listed = None
        for key, _chunk, _pos, _payload in self.by_id.merged():
            if key == prev and key != listed:
                listed = key
                yield bytes.fromhex(key.decode()).decode()
            prev = key


__all__ = ["DropFiles", "DuplicatePlan", "RowIndex", "SortedRuns", "sorted_hashes"]
