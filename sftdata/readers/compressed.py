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

from sftdata.readers.jsonl import Chunk, RawLine, read_lines
from sftdata.readers.remote import open_input


class DecompressedTooLarge(Exception):
    pass


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
        data = self.inner.read(len(buf))
        self.count += len(data)
        if self.count > self.limit:
            raise DecompressedTooLarge(f"decompressed data is over max_decompressed_bytes {self.limit}")
        buf[: len(data)] = data
        return len(data)


class _Zstd:
    """Zstandard frames decoded one block at a time. Unlike ``stream_reader``, a truncated stream
    is an error here, not a silent early end."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        self.raw, self.zstd = raw, zstandard
        self.obj = zstandard.ZstdDecompressor().decompressobj()
        self.pending = b""
        self.started = False

    def read(self, n: int) -> bytes:
        while len(self.pending) < n:
            block = self.raw.read(1 << 20)
            if not block:
                if self.started and not self.obj.eof:
                    raise EOFError("truncated or corrupt zstd stream")
                break
            self.started = True
            self.pending += self.obj.decompress(block)
            while self.obj.eof and self.obj.unused_data:  # concatenated frames
                rest = self.obj.unused_data
                self.obj = self.zstd.ZstdDecompressor().decompressobj()
                self.pending += self.obj.decompress(rest)
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def close(self) -> None:
        self.raw.close()


def open_decompressed(path: str, kind: str, limit: int) -> io.BufferedReader:
    raw = open_input(path)
    inner = gzip.GzipFile(fileobj=raw) if kind == "jsonl_gz" else _Zstd(raw)
    return io.BufferedReader(_Limited(inner, limit, raw), buffer_size=1 << 20)


def iter_compressed_lines(chunk: Chunk, max_record_bytes: int, limit: int) -> Iterator[RawLine]:
    with open_decompressed(chunk.path, chunk.kind, limit) as f:
        yield from read_lines(f, chunk.first_line, None, max_record_bytes)
