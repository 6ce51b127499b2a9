"""The local commit primitives: write under a temporary name, fsync, rename, fsync the folder.

Why: a reader (``--resume``, ``verify``, a trainer) must never see a file that looks complete but
is not. A rename within one folder is atomic on POSIX filesystems; the fsyncs make the new bytes
and the new name survive a power cut. Every local write of the package goes through here.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def atomic_replace(tmp: Path, final: Path, *, sync_dir: bool = True) -> None:
    """Publish a fully written ``tmp`` as ``final``: fsync its bytes, rename, fsync the folder."""
    fsync_file(tmp)
    os.replace(tmp, final)
    if sync_dir:
        fsync_dir(final.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a whole file atomically: readers see the old file or the new one, never a part."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
