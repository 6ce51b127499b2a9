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
import io
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

# One record of a dedupe run: (content hash, position in the chunk, line, id).
Hashed = tuple[str, int, int, str]


def sorted_hashes(records: Iterable[tuple[int, str, str]]) -> list[Hashed]:
    """A chunk's (line, hash, id) triples, in input order, as a run sorted by (hash, position)."""
    return sorted((h, pos, line, rid) for pos, (line, h, rid) in enumerate(records))


def run_bytes(run: Iterable[tuple[str, int, Any]]) -> bytes:
    """A sorted run of (key, position, payload) as the lines of its spill file. Made where the
    chunk ran, so the driver receives one bytes object per chunk instead of a tuple per row."""
    return b"".join([b"%s\t%d\t%s\n" % (key.encode(), pos, orjson.dumps(payload)) for key, pos, payload in run])


def row_runs(hashes: list[tuple[str, str]]) -> tuple[bytes, bytes]:
    """A chunk's (content hash, id) per written row as its two ``RowIndex`` runs: by content hash
    (payload: the id) and by id (the id's UTF-8 bytes in hex, so that byte order is kept). The
    runs ``run_bytes`` makes of the sorted triples, built from sorted positions (a stable sort:
    equal keys stay in row order) without a tuple or a line object per row."""
    by_hash, by_id = io.BytesIO(), io.BytesIO()
    for pos in sorted(range(len(hashes)), key=lambda i: hashes[i][0]):
        h, rid = hashes[pos]
        by_hash.write(b"%s\t%d\t%s\n" % (h.encode(), pos, orjson.dumps(rid)))
    keys = [rid.encode() for _h, rid in hashes]
    for pos in sorted(range(len(keys)), key=keys.__getitem__):
        by_id.write(b"%s\t%d\tnull\n" % (keys[pos].hex().encode(), pos))
    return by_hash.getvalue(), by_id.getvalue()


def hash_run(records: list[tuple[int, str, str]]) -> bytes:
    """A chunk's (line, hash, id) triples, in input order, as the bytes of its ``DuplicatePlan`` run
    (what ``run_bytes`` makes of ``sorted_hashes``, from sorted positions: no tuple per record)."""
    out = io.BytesIO()
    for pos in sorted(range(len(records)), key=lambda i: records[i][1]):
        line, h, rid = records[pos]
        out.write(b"%s\t%d\t%s\n" % (h.encode(), pos, orjson.dumps((line, rid))))
    return out.getvalue()


SPILL_NAME = "runs.spill"


class SortedRuns:
    """Per-chunk runs of (key, position, payload), each sorted by (key, position), appended to one
    spill file in a temporary folder; ``merged`` yields (key, chunk, position, payload) in (key,
    chunk, position) order. Keys are hex strings (no tab, byte order = the order of what they
    encode). One file for every chunk, not one per chunk: creating a file costs more system time
    than writing a run (up to a millisecond on some filesystems), and the driver that spills shares
    the cores with the workers. A chunk added again (a resumed chunk) points at its new bytes."""

    def __init__(self, prefix: str = "sftdata-runs-") -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self._spill: BinaryIO | None = None
        self._spans: dict[int, tuple[int, int]] = {}  # chunk -> (offset, size) of its run

    def __enter__(self) -> SortedRuns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self._tmp.cleanup()

    @property
    def folder(self) -> Path:
        """The temporary folder the runs are spilled into (removed by ``close``)."""
        return Path(self._tmp.name)

    def add(self, chunk: int, run: Iterable[tuple[str, int, Any]]) -> None:
        self.add_bytes(chunk, run_bytes(run))

    def add_bytes(self, chunk: int, data: bytes) -> None:
        """A chunk's run as ``run_bytes`` made it (where the chunk ran), appended as it is."""
        if self._spill is None:
            self._spill = open(self.folder / SPILL_NAME, "wb")  # noqa: SIM115 - closed by close()
        self._spans[chunk] = (self._spill.tell(), len(data))
        self._spill.write(data)

    def _read(self, chunk: int, offset: int, size: int) -> Iterator[tuple[bytes, int, int, bytes]]:
        with open(self.folder / SPILL_NAME, "rb") as f:
            f.seek(offset)
            while size > 0:  # a run is whole lines: its last one ends at offset + size
                raw = f.readline()
                size -= len(raw)
                key, pos, payload = raw.rstrip(b"\n").split(b"\t", 2)
                yield key, chunk, int(pos), payload

    def merged(self) -> Iterator[tuple[bytes, int, int, bytes]]:
        if self._spill is not None:
            self._spill.flush()
        return heapq.merge(*(self._read(chunk, *self._spans[chunk]) for chunk in sorted(self._spans)))


def _repeats(merged: Iterable[tuple[bytes, int, int, bytes]]) -> Iterator[tuple[bytes, int, int, int, bytes]]:
    """(first payload, first's chunk, chunk, position, payload) of every record whose key came before it."""
    group, first, first_chunk = None, b"", -1
    for key, chunk, pos, payload in merged:
        if key != group:
            group, first, first_chunk = key, payload, chunk
        else:
            yield first, first_chunk, chunk, pos, payload


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
        for first, _first_chunk, chunk, _pos, payload in _repeats(self.merged()):
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


def json_lines(items: Iterable[Any]) -> bytes:
    """Items as JSON Lines (a chunk's dropped pairs or truncated ids, made where the chunk ran)."""
    return b"".join([orjson.dumps(item) + b"\n" for item in items])


class RowIndex:
    """The content hash and id of every written row, spilled per chunk as its result arrives (the
    result's ``hashes`` list is emptied): the commit's duplicates and repeated ids, in bounded memory."""

    def __init__(self) -> None:
        self.by_hash, self.by_id = SortedRuns("sftdata-hashes-"), SortedRuns("sftdata-ids-")
        self._dropped: dict[int, Path] = {}
        self._truncated: dict[int, Path] = {}

    def __enter__(self) -> RowIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.by_hash.close()
        self.by_id.close()

    def add(self, chunk: int, hashes: list[tuple[str, str]]) -> None:
        """A chunk's (content hash, id) per written row, in row order."""
        self.add_runs(chunk, *row_runs(hashes))

    def add_runs(self, chunk: int, by_hash: bytes, by_id: bytes) -> None:
        """A chunk's two runs as ``row_runs`` made them (in the worker); a chunk added again is replaced."""
        self.by_hash.add_bytes(chunk, by_hash)
        self.by_id.add_bytes(chunk, by_id)

    def add_dropped(self, chunk: int, dropped: list[tuple[str, str]] | bytes) -> None:
        """A chunk's rows ``dedupe: exact`` dropped, (id, id it duplicates), in input order (or as
        ``json_lines`` made them)."""
        self._add_list(self._dropped, chunk, "dropped", dropped)

    def add_truncated(self, chunk: int, ids: list[str] | bytes) -> None:
        """A chunk's truncated row ids, in input order (or as ``json_lines`` made them)."""
        self._add_list(self._truncated, chunk, "truncated", ids)

    def _add_list(self, paths: dict[int, Path], chunk: int, kind: str, items: list | bytes) -> None:
        data = items if isinstance(items, bytes) else json_lines(items)
        path = self.by_id.folder / f"chunk-{chunk:06d}.{kind}"
        if data:
            path.write_bytes(data)
            paths[chunk] = path
        elif paths.pop(chunk, None) is not None:
            path.unlink()

    @staticmethod
    def _lines(path: Path | None) -> Iterator[Any]:
        if path is not None:
            with open(path, "rb") as f:
                for raw in f:
                    yield orjson.loads(raw)

    def dropped(self, chunk: int) -> Iterator[tuple[str, str]]:
        yield from (tuple(pair) for pair in self._lines(self._dropped.get(chunk)))

    def truncated(self, chunk: int) -> Iterator[str]:
        yield from self._lines(self._truncated.get(chunk))

    def duplicates(self) -> Iterator[tuple[str, str]]:
        """(id, id of the first row with its content) of every later row with the same content hash,
        grouped by content hash (groups in hash order; within one, in input order)."""
        for first, _first_chunk, _chunk, _pos, payload in _repeats(self.by_hash.merged()):
            yield orjson.loads(payload), orjson.loads(first)

    def repeated_ids(self) -> Iterator[str]:
        """Every id two or more rows carry, once, sorted."""
        prev = listed = None
        for key, _chunk, _pos, _payload in self.by_id.merged():
            if key == prev and key != listed:
                listed = key
                yield bytes.fromhex(key.decode()).decode()
            prev = key


__all__ = ["DropFiles", "DuplicatePlan", "hash_run", "RowIndex", "SortedRuns", "json_lines", "row_runs", "run_bytes",
           "sorted_hashes"]
