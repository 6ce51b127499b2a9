"""The row index of a mix's folder (``process.dedupe.RowIndex``) with every chunk's runs in one
spill file per kind instead of a file per chunk.

Why: a mix's main pass indexes two folders (``train`` and ``eval``), four runs per chunk, while
its workers write the chunks' shards; creating a file is the costly part of spilling a run (on
some filesystems a millisecond of system time each, more than formatting the run), and the
driver that creates them shares the cores with the workers. Appending every run to one file
keeps what ``RowIndex`` promises (each run is read back lazily, a line at a time, so the driver
holds no list that grows with the rows) and its results: the same runs, merged in the same
(key, chunk, position) order. A chunk added again (a resumed chunk's result) points at its
new bytes; the old ones are left unread.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import BinaryIO

from sftdata.process.dedupe import RowIndex, SortedRuns

SPILL_NAME = "runs.spill"


class SpilledRuns(SortedRuns):
    """``SortedRuns`` whose chunks' runs are byte ranges of one append-only file."""

    def __init__(self, prefix: str = "sftdata-runs-") -> None:
        super().__init__(prefix)
        self._spill: BinaryIO | None = None
        self._spans: dict[int, tuple[int, int]] = {}  # chunk -> (offset, size) of its run

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        super().close()

    def add_bytes(self, chunk: int, data: bytes) -> None:
        """A chunk's run as ``run_bytes`` made it, appended to the spill file."""
        if self._spill is None:
            self._spill = open(self.folder / SPILL_NAME, "wb")  # noqa: SIM115 - closed by close()
        self._spans[chunk] = (self._spill.tell(), len(data))
        self._spill.write(data)

    def _span(self, chunk: int, offset: int, size: int) -> Iterator[tuple[bytes, int, int, bytes]]:
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
        return heapq.merge(*(self._span(chunk, *self._spans[chunk]) for chunk in sorted(self._spans)))


class SpilledRowIndex(RowIndex):
    """``RowIndex`` over ``SpilledRuns``: two spill files per folder, whatever the number of chunks."""

    def __init__(self) -> None:
        super().__init__()
        plain = (self.by_hash, self.by_id)
        self.by_hash, self.by_id = SpilledRuns("sftdata-hashes-"), SpilledRuns("sftdata-ids-")
        for runs in plain:
            runs.close()
