"""An Arrow IPC stream file written as ``pyarrow`` writes it, with the large value buffers streamed in blocks.

Why: an export file holds one record batch per prepared shard, so its bytes match what the
``datasets`` writer (and sftdata before) wrote; building that batch meant one contiguous copy of
the shard's token ids and labels, plus a mask, in memory at once: memory that grew with the shard.
Here the batch is built with *stand-ins* for those value buffers: slices of one anonymous memory
map that is never touched (so it costs no memory), the size of the real buffers. ``pyarrow``'s
IPC writer computes the message from the sizes and offsets alone and hands each body buffer to
the sink as it is; the sink recognises a stand-in by its address and writes the real bytes in its
place, block by block, from the parts they are made of (the shard's mapped batches, or a fill
such as the all-ones mask). The offsets stay real (the writer reads them). The file is the same,
byte for byte (``tests/export/test_ipc_stream.py`` compares it with ``pyarrow``'s own).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

BLOCK_BYTES = 4 << 20
Fill = Callable[[int, int], Iterator[memoryview]]  # (first byte, bytes) -> the real bytes, in blocks


def parts_fill(parts: tuple[np.ndarray, ...], after_block: Callable[[], None] | None = None) -> Fill:
    """The bytes of ``parts`` laid end to end; ``after_block`` runs after each block is written."""
    views = [np.ascontiguousarray(p).view(np.uint8) for p in parts]

    def fill(first: int, size: int) -> Iterator[memoryview]:
        at = 0
        for v in views:
            lo, hi = max(first, at), min(first + size, at + len(v))
            for a in range(lo, hi, BLOCK_BYTES):
                yield memoryview(v[a - at:min(hi, a + BLOCK_BYTES) - at])
                if after_block is not None:
                    after_block()
            at += len(v)

    return fill


def constant_fill(value: int, dtype: type) -> Fill:
    """Bytes of an array holding ``value`` everywhere (e.g. the all-ones attention mask)."""
    block = np.full(BLOCK_BYTES // np.dtype(dtype).itemsize, value, dtype).view(np.uint8)

    def fill(first: int, size: int) -> Iterator[memoryview]:
        for a in range(0, size, BLOCK_BYTES):
            yield memoryview(block[:min(BLOCK_BYTES, size - a)])

    return fill


class StandIns:
    """Buffers of given sizes that no one reads, each with the fill that writes its real bytes."""

    def __init__(self, sizes: list[int]) -> None:
        self._map = mmap.mmap(-1, max(1, sum(-(-s // 64) * 64 for s in sizes)))  # untouched: no memory
        self._whole = pa.py_buffer(self._map)
        self._next = 0
        self.regions: list[tuple[int, int, Fill]] = []

    def buffer(self, size: int, fill: Fill) -> pa.Buffer:
        buf = self._whole.slice(self._next, size)
        self.regions.append((buf.address, size, fill))
        self._next += -(-size // 64) * 64
        return buf

    def close(self) -> None:
        """Forget the regions; the map goes when the last array over it does (it was never touched)."""
        self.regions, self._whole = [], None


class _Sink:
    """A file object for ``pa.PythonFile``: writes pass through, a stand-in's bytes are replaced."""

    closed = False

    def __init__(self, f, regions: list[tuple[int, int, Fill]]) -> None:
        self.f, self.regions, self.position = f, regions, 0

    def write(self, data) -> int:
        size = data.size if isinstance(data, pa.Buffer) else len(data)
        if isinstance(data, pa.Buffer) and size:
            for base, length, fill in self.regions:
                if base <= data.address and data.address + size <= base + length:
                    for block in fill(data.address - base, size):
                        self.f.write(block)
                    self.position += size
                    return size
            data = memoryview(data)
        self.f.write(data)
        self.position += size
        return size

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:  # the owner closes the file
        pass


def stand_in_table(schema: pa.Schema, offsets: np.ndarray, values: int, fills: list[Fill]) -> tuple[pa.Table, StandIns]:
    """A table of ``list<int32>`` columns (``schema``) over the same ``offsets``, each column's
    ``values`` int32 values a stand-in written from its fill."""
    stand = StandIns([4 * values] * len(fills))
    offs = np.ascontiguousarray(offsets, dtype=np.int32)
    arrow_offs = pa.Array.from_buffers(pa.int32(), len(offs), [None, pa.py_buffer(offs)])
    columns = [pa.ListArray.from_arrays(arrow_offs, pa.Array.from_buffers(pa.int32(), values,
                                                                          [None, stand.buffer(4 * values, f)]))
               for f in fills]
    return pa.Table.from_arrays(columns, schema=schema), stand


def write_stream(path: Path, schema: pa.Schema, table: pa.Table, stand_ins: StandIns) -> None:
    """``table`` as an IPC stream at ``path`` (one record batch per chunk, as ``write_table`` writes),
    stand-in buffers written from their fills."""
    with open(path, "wb") as f, pa.ipc.new_stream(pa.PythonFile(_Sink(f, stand_ins.regions), mode="w"),
                                                  schema) as writer:
        writer.write_table(table)
