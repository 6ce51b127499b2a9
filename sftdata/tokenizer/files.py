"""Reading the tokenizer's files: regular files only, of a bounded size, checked on the open descriptor.

Why: a cache file replaced by a FIFO blocked every run, one replaced by a symlink to ``/dev/zero``
read until the kernel killed the run. The file is opened first (``O_NONBLOCK``: a FIFO's open
returns at once), then the open descriptor is checked (``fstat``: only a regular file passes) and
read up to its size, never more than ``limit`` bytes. Files of the cache folder are opened with
``O_NOFOLLOW`` too: sftdata never writes a link there, so a link is damage and the file is rebuilt.

A local stand-in for the shared opener (``sftdata.storage.opener``, being written at the same
time); the two are meant to be folded together.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class FileRefused(OSError):
    """The file is missing, not a regular file, a link where none may be, or larger than allowed."""


def read_regular(path: Path, limit: int, *, follow_links: bool = True) -> bytes:
    """The bytes of the regular file at ``path``; ``FileRefused`` for anything else or above ``limit``."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FileRefused(f"{path}: cannot open ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{path}: not a regular file")
        if info.st_size > limit:
            raise FileRefused(f"{path}: {info.st_size:,} bytes, more than the {limit:,} allowed")
        chunks, left = [], info.st_size + 1  # one byte more: a file that grew is noticed
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) != info.st_size:
        raise FileRefused(f"{path}: changed while it was read")
    return data
