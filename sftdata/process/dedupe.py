"""The plan of ``dedupe: exact`` in bounded memory: an external merge of per-chunk sorted runs.

Why not a dict of every content hash: it grows with the rows (a million rows, a few hundred MB in
the driver). Instead each chunk's hashing task returns its records sorted by content hash
(``sorted_hashes``); the driver spills each chunk's run to a temporary file as it arrives and then
merges the runs (``heapq.merge``): records with the same hash come together, ordered by (chunk,
position in the chunk), so the first of each group is the first occurrence in input order and the
others are its duplicates. Memory: one buffered line per chunk plus the drops themselves. The result
is the one the dict gave, for any number of workers and any executor.
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

# One record of a run: (content hash, position in the chunk, line, id).
Hashed = tuple[str, int, int, str]


def sorted_hashes(records: Iterable[tuple[int, str, str]]) -> list[Hashed]:
    """A chunk's (line, hash, id) triples, in input order, as a run sorted by (hash, position)."""
    return sorted((h, pos, line, rid) for pos, (line, h, rid) in enumerate(records))


def _write_run(path: Path, run: list[Hashed]) -> None:
    with open(path, "wb") as f:
        f.writelines(b"%s\t%d\t%d\t%s\n" % (h.encode(), pos, line, orjson.dumps(rid)) for h, pos, line, rid in run)


def _read_run(path: Path, chunk: int) -> Iterator[tuple[bytes, int, int, int, bytes]]:
    with open(path, "rb") as f:
        for raw in f:
            h, pos, line, rid = raw.rstrip(b"\n").split(b"\t", 3)
            yield h, chunk, int(pos), int(line), rid


class DuplicatePlan:
    """Collects chunks' sorted runs (``add``, in any order), then ``drops()``: per chunk, the lines
    to drop and the id of the first occurrence each one duplicates."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="sftdata-dedupe-")
        self._runs: dict[int, Path] = {}

    def __enter__(self) -> DuplicatePlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def add(self, chunk: int, run: list[Hashed]) -> None:
        path = Path(self._tmp.name, f"chunk-{chunk:06d}.hashes")
        _write_run(path, run)
        self._runs[chunk] = path

    def drops(self) -> dict[int, dict[int, str]]:
        merged = heapq.merge(*(_read_run(path, chunk) for chunk, path in sorted(self._runs.items())))
        out: dict[int, dict[int, str]] = {}
        group, first_raw, first_id = None, b"", None
        for h, chunk, _pos, line, rid in merged:
            if h != group:  # the first record of a hash: its first occurrence in input order
                group, first_raw, first_id = h, rid, None
                continue
            if first_id is None:
                first_id = orjson.loads(first_raw)
            out.setdefault(chunk, {})[line] = first_id
        return out


__all__ = ["DuplicatePlan", "sorted_hashes"]
