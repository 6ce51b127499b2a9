"""Offline best-fit-decreasing packing of whole conversations into rows of at most ``max_length``.

Packing happens per chunk, after labelling: the plan of chunks does not depend on the number of
workers, so neither do the packed rows. A conversation is never split. Each packed row carries
``position_ids`` that restart at 0 for every conversation and ``seq_lengths`` (the layout TRL's
padding-free training and flash-attention's variable-length kernels use), so attention and loss
never cross a conversation boundary: every conversation starts with BOS, whose label is ignored.
"""

from __future__ import annotations

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
    """Collects a chunk's encoded conversations and writes them as packed rows at the end."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.items: list[tuple[str, np.ndarray, np.ndarray, str, str]] = []

    def add(self, row_id: str, input_ids: np.ndarray, labels: np.ndarray, content_hash: str,
            prompt_hash: str) -> None:
        self.items.append((row_id, input_ids, labels, content_hash, prompt_hash))

    def write(self, writer) -> None:
        bins = bfd_bins([len(it[1]) for it in self.items], self.max_length)
        for b in bins:
            members = [self.items[i] for i in b]
            lengths = np.array([len(m[1]) for m in members], dtype=np.int32)
            positions = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
            writer.add(members[0][0], np.concatenate([m[1] for m in members]),
                       np.concatenate([m[2] for m in members]), members[0][3], members[0][4],
                       position_ids=positions, seq_lengths=lengths, packed_ids=[m[0] for m in members],
                       content_hashes=[m[3] for m in members], prompt_hashes=[m[4] for m in members])
        self.items.clear()
