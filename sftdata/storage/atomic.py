"""The local commit primitives: write under a temporary name, fsync, rename, fsync the folder.

Why: a reader (``--resume``, ``verify``, a trainer) must never see a file that looks complete but
is not. A rename within one folder is atomic on POSIX filesystems; the fsyncs make the new bytes
and the new name survive a power cut. Every local write of the package goes through here.

A run on this machine's process pool defers the fsyncs of its chunk files (``sync=False``):
the renames keep every name whole, ``start_writeback`` has the kernel write the bytes while the
worker goes on, and the commit makes them all durable with one ``sync_folder`` before the
manifest is written (one wait for the disk per run instead of one per file; the figures are in
``benchmarks/RESULTS.md``). What a deferred chunk vouches for is checked by
content on ``--resume`` (``process.ledger.Ledger.done``), so a power cut before the commit costs at most
a redo of the chunks whose bytes did not reach the disk.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from sftdata.storage.layout import temp_name


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    try:
        fsync_file(path)
    except OSError:  # some filesystems refuse directory fsync; the rename is still atomic
        pass


def temp_path(path: Path) -> Path:
    """The temporary sibling ``path`` is written as (see ``sftdata.storage.layout.temp_name``)."""
    return path.with_name(temp_name(path.name, os.getpid()))


def atomic_replace(tmp: Path, final: Path, *, sync_dir: bool = True, sync: bool = True) -> None:
    """Publish a fully written ``tmp`` as ``final``: fsync its bytes, rename, fsync the folder.

    ``sync=False``: rename only, and start the write-back (the caller's commit syncs later)."""
    if sync:
        fsync_file(tmp)
    os.replace(tmp, final)
    if not sync:
        start_writeback(final)
    elif sync_dir:
        fsync_dir(final.parent)


def publish_scratch(tmp: Path, final: Path) -> None:
    """Rename a fully written work file into place, without syncing it or starting its write-back:
    it lives until its run deletes it (a first pass's staged or rendered rows), so its pages need
    never reach the disk (a commit's ``sync_folder`` comes after they are deleted)."""
    os.replace(tmp, final)


def atomic_write_bytes(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write a whole file atomically: readers see the old file or the new one, never a part.

    ``sync=False``: the same rename, without waiting for the disk (see the module docstring)."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


@lru_cache(maxsize=1)
def _libc() -> Any:
    """The C library, for ``sync_file_range`` and ``syncfs`` (Linux); None where it has neither."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        libc.syncfs.argtypes = [ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_SYNC_FILE_RANGE_WRITE = 2  # start writing the dirty pages of the range; do not wait


def start_writeback(path: str | os.PathLike) -> None:
    """Ask the kernel to start writing ``path``'s bytes to disk now, without waiting for it, so
    the commit's ``sync_folder`` finds little left to write. Best effort: a no-op off Linux."""
    libc = _libc()
    if libc is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        libc.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
    finally:
        os.close(fd)


def sync_folder(path: str | os.PathLike) -> None:
    """Make every file written under ``path`` (and the names of its folders) durable.

    Linux: one ``syncfs`` of the filesystem ``path`` is on, which waits for all of its dirty data.
    Elsewhere, or where ``syncfs`` fails: an fsync of every file and folder below ``path``."""
    libc = _libc()
    if libc is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for root, _dirs, names in os.walk(path):
        for name in names:
            fsync_file(os.path.join(root, name))
        fsync_dir(root)
