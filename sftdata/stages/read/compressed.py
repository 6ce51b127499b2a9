"""Gzip and Zstandard compressed JSON Lines, streamed with a decompressed-size limit.

A compressed file cannot be split without decompressing it, so it is one unit of work. The limit
(``max_decompressed_bytes``) stops a decompression bomb before it fills memory or disk; what is
past the limit is reported in the quarantine, never silently dropped.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from typing import BinaryIO

from sftdata.errors import DecompressedTooLarge
from sftdata.stages.read.jsonl import Chunk, RawLine, read_lines
from sftdata.stages.read.remote import open_input


class _Limited(io.RawIOBase):
    """A reader that raises once more than ``limit`` bytes came out of the decompressor."""

    def __init__(self, inner: BinaryIO, limit: int, raw: BinaryIO) -> None:
        self.inner, self.limit, self.count, self.raw = inner, limit, 0, raw

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        # GzipFile does not close a file object it was given: close the source file here
        if not self.closed:
            self.inner.close()
            self.raw.close()
        super().close()

    def readinto(self, buf) -> int:
        # never ask for more than one past the limit (a single large read must not decompress past it)
        # nor more than 1 MiB at a time
        data = self.inner.read(min(len(buf), self.limit - self.count + 1, 1 << 20))
        self.count += len(data)
        if self.count > self.limit:
            raise DecompressedTooLarge(f"decompressed data is over max_decompressed_bytes {self.limit}")
        buf[: len(data)] = data
        return len(data)


class _Zstd:
    """Zstandard frames decoded with bounded output per call.

    ``decompressobj`` has no output limit, so the input is fed in slices of ``STEP`` bytes: a
    zstd block holds at most 128 KiB and needs at least 3 bytes, so one call yields at most about
    ``STEP / 3 * 128 KiB`` (5.5 MiB), whatever the ratio. Output is kept in a bytearray with a read
    offset (compacted when half is consumed), so reading is linear, never re-slicing the rest.
    Unlike ``stream_reader``, a truncated stream is an error here, not a silent early end.
    """

    STEP = 128

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        self.raw, self.zstd = raw, zstandard
        self.obj = zstandard.ZstdDecompressor().decompressobj()
        self.src = b""
        self.src_pos = 0
        self.out = bytearray()
        self.out_pos = 0
        self.started = False

    def _feed(self, piece: bytes) -> None:
        self.out += self.obj.decompress(piece)
        while self.obj.eof and self.obj.unused_data:  # concatenated frames: the rest is under STEP bytes
            rest = self.obj.unused_data
            self.obj = self.zstd.ZstdDecompressor().decompressobj()
            self.out += self.obj.decompress(rest)

    def read(self, n: int) -> bytes:
        while len(self.out) - self.out_pos < n:
            if self.src_pos >= len(self.src):
                self.src, self.src_pos = self.raw.read(1 << 20), 0
                if not self.src:
                    if self.started and not self.obj.eof:
                        raise EOFError("truncated or corrupt zstd stream")
                    break
            piece = self.src[self.src_pos:self.src_pos + self.STEP]
            self.src_pos += len(piece)
            self.started = True
            if self.obj.eof:  # a frame ended exactly at a slice boundary: the next one starts here
                self.obj = self.zstd.ZstdDecompressor().decompressobj()
            self._feed(piece)
        end = min(len(self.out), self.out_pos + n)
        data = bytes(self.out[self.out_pos:end])
        self.out_pos = end
        if self.out_pos > len(self.out) // 2:
            del self.out[: self.out_pos]
            self.out_pos = 0
        return data

    def close(self) -> None:
        self.raw.close()


def open_decompressed(path: str, kind: str, limit: int) -> io.BufferedReader:
    """A buffered reader over a ``*_gz`` or ``*_zst`` input that raises ``DecompressedTooLarge``
    past ``limit`` decompressed bytes; memory stays bounded by the buffers whatever the ratio."""
    raw = open_input(path)
    inner = gzip.GzipFile(fileobj=raw) if kind.endswith("_gz") else _Zstd(raw)
    return io.BufferedReader(_Limited(inner, limit, raw), buffer_size=1 << 20)


def iter_compressed_lines(chunk: Chunk, max_record_bytes: int, limit: int,
                          max_blank_bytes: int | None = None) -> Iterator[RawLine]:
    with open_decompressed(chunk.path, chunk.kind, limit) as f:
        yield from read_lines(f, chunk.first_line, None, max_record_bytes, max_blank_bytes)
