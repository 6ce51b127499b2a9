"""Offline best-fit-decreasing packing of whole conversations into rows of at most ``max_length``.

Packing happens per chunk, after labelling: the plan of chunks does not depend on the number of
workers, so neither do the packed rows. A conversation is never split. Each packed row carries
``position_ids`` that restart at 0 for every conversation and ``seq_lengths`` (the layout TRL's
padding-free training and flash-attention's variable-length kernels use), so attention and loss
never cross a conversation boundary: every conversation starts with BOS, whose label is ignored.
"""

from __future__ import annotations

import os
import struct
import tempfile
from array import array
from bisect import bisect_left, insort

import numpy as np
import pyarrow as pa

from sftdata.stages.write.arrow import BASE_SCHEMA

PACKED_SCHEMA = pa.schema([
    *BASE_SCHEMA,
    ("position_ids", pa.list_(pa.int32())),
    ("seq_lengths", pa.list_(pa.int32())),
    ("packed_ids", pa.list_(pa.string())),
    ("content_hashes", pa.list_(pa.string())),
    ("prompt_hashes", pa.list_(pa.string())),
])


def bfd_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity, best-fit decreasing.

    Ties are broken by input index, and each bin lists its items in input order, so the result
    is a pure function of the lengths. Bins come out in the order of their first item.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for i in order:
        need = lengths[i]
        if need > capacity:
            raise ValueError(f"item {i} of length {need} does not fit in {capacity}")
        pos = bisect_left(free, (need, -1))
        if pos < len(free):
            room, b = free.pop(pos)
            bins[b].append(i)
            insort(free, (room - need, b))
        else:
            bins.append([i])
            insort(free, (capacity - need, len(bins) - 1))
    for b in bins:
        b.sort()
    bins.sort(key=lambda b: b[0])
    return bins


class Packer:
    """Collects a chunk's encoded conversations and writes them as packed rows at the end.

    Best-fit decreasing needs every length of the chunk before the first row is written, so the
    conversations are buffered; their tokens, labels, id and hashes go to an unnamed temporary file
    as they arrive (removed by the system even after a crash), and only the lengths and file
    offsets stay in memory. ``write`` reads each bin's members back with ``pread``: page cache, not
    the worker's memory, so a chunk of any size costs a few bytes per conversation here, and the
    output shard writer bounds the rest.
    """

    def __init__(self, max_length: int, spill_dir: str | None = None) -> None:
        self.max_length = max_length
        self._spill = tempfile.TemporaryFile(prefix="sftdata-pack-", dir=spill_dir)  # noqa: SIM115 - closed in write()
        self._lengths = array("i")  # tokens of each conversation, in input order
        self._offsets = array("q", [0])  # where each conversation's record starts in the spill file

    @property
    def count(self) -> int:
        """Conversations buffered (a property, not ``len``: an empty packer must stay truthy)."""
        return len(self._lengths)

    def __enter__(self) -> Packer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, row_id: str, input_ids: np.ndarray, labels: np.ndarray, content_hash: str,
            prompt_hash: str) -> None:
        ids = np.ascontiguousarray(input_ids, dtype=np.int32)
        strings = [s.encode("utf-8") for s in (row_id, content_hash, prompt_hash)]
        head = _HEAD.pack(len(ids), *map(len, strings))
        self._spill.write(head)
        self._spill.write(ids.tobytes())
        self._spill.write(np.ascontiguousarray(labels, dtype=np.int32).tobytes())
        for s in strings:
            self._spill.write(s)
        self._lengths.append(len(ids))
        self._offsets.append(self._offsets[-1] + _HEAD.size + 8 * len(ids) + sum(map(len, strings)))

    def _item(self, i: int) -> tuple[str, np.ndarray, np.ndarray, str, str]:
        start = self._offsets[i]
        data = os.pread(self._spill.fileno(), self._offsets[i + 1] - start, start)
        n, *sizes = _HEAD.unpack_from(data)
        at = _HEAD.size + 8 * n
        tokens = np.frombuffer(data, dtype=np.int32, count=2 * n, offset=_HEAD.size)
        strings = []
        for size in sizes:
            strings.append(data[at:at + size].decode("utf-8"))
            at += size
        return strings[0], tokens[:n], tokens[n:], strings[1], strings[2]

    def write(self, writer) -> None:
        """Every buffered conversation into ``writer`` as packed rows; the spill file is closed."""
        try:
            self._spill.flush()
            for b in bfd_bins(self._lengths.tolist(), self.max_length):
                members = [self._item(i) for i in b]
                lengths = np.array([len(m[1]) for m in members], dtype=np.int32)
                positions = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
                writer.add(members[0][0], np.concatenate([m[1] for m in members]),
                           np.concatenate([m[2] for m in members]), members[0][3], members[0][4],
                           position_ids=positions, seq_lengths=lengths, packed_ids=[m[0] for m in members],
                           content_hashes=[m[3] for m in members], prompt_hashes=[m[4] for m in members])
        finally:
            self.close()

    def close(self) -> None:
        """Let go of the spill file (nothing is written after this)."""
        self._spill.close()
        self._lengths, self._offsets = array("i"), array("q", [0])


_HEAD = struct.Struct("<iiii")  # tokens, then the bytes of the id, content hash and prompt hash
