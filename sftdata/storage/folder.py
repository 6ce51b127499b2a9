"""Where a run's files live: a local folder, or any filesystem pyarrow can open (``s3://``,
``gs://``, ``hdfs://``, ``file://``), behind one ``Folder`` interface.

Why two classes behind one name: the local folder keeps its exact commit protocol (temp name,
fsync, rename, fsync of the folder; see ``storage.atomic`` for the chunk files a local pool
syncs once at the commit), which is what the kill/resume tests prove, while a remote
folder gets the protocol object stores can give: every file is written whole on this machine's
*staging* folder first and then uploaded as one object (a PUT is all-or-nothing), the chunk's
done-marker after its shards, the manifest after everything. Callers write into ``staging()``
and call ``publish``; for a local folder staging is the folder itself and publishing is a rename
at most, so no caller needs to know which kind it holds.

``Folder(location)`` returns a ``LocalFolder`` or a ``RemoteFolder``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from sftdata.errors import UnsafeFileError
from sftdata.storage.atomic import atomic_write_bytes
from sftdata.storage.layout import WORK_DIR
from sftdata.storage.opener import metadata_limit, open_regular, read_regular
from sftdata.storage.uri import display, filesystem, is_uri, local_path_of

# Object stores publish a PUT atomically; other filesystems get a temp name and a move.
_ATOMIC_PUT = {"s3", "gcs", "abfs"}


class Folder:
    """A run's output folder. Names are relative, ``/``-separated (``_chunks/chunk-000001.json``)."""

    remote = False
    location: str
    root: str

    def __new__(cls, location: str | os.PathLike) -> Folder:
        if cls is Folder:
            remote = is_uri(str(location)) and local_path_of(str(location)) is None
            cls = RemoteFolder if remote else LocalFolder
        return super().__new__(cls)

    def __str__(self) -> str:
        return display(self.location)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    # The interface both kinds implement (reading, then writing).
    def exists(self) -> bool: raise NotImplementedError
    def listing(self, sub: str = "") -> dict[str, int]: raise NotImplementedError
    def size(self, name: str) -> int | None: raise NotImplementedError
    def read_bytes(self, name: str) -> bytes: raise NotImplementedError
    def open_read(self, name: str) -> BinaryIO: raise NotImplementedError
    def sha256(self, name: str, block: int = 1 << 22) -> str: raise NotImplementedError
    def make(self) -> None: raise NotImplementedError
    def write_bytes(self, name: str, data: bytes) -> None: raise NotImplementedError
    def publish(self, local: Path, name: str) -> None: raise NotImplementedError
    def delete(self, name: str) -> None: raise NotImplementedError
    def delete_tree(self, sub: str) -> None: raise NotImplementedError
    def staging(self) -> Path: raise NotImplementedError

    def publish_staged(self, names: Iterable[str]) -> None:
        """Publish files a worker wrote into ``staging()`` under the same names, in order."""
        staging = self.staging()
        for name in names:
            self.publish(staging / name, name)

    def drop_staging(self) -> None:
        """Remove this machine's staging copy once the run is committed (nothing for a local folder)."""


class LocalFolder(Folder):
    def __init__(self, location: str | os.PathLike) -> None:
        self.location = str(location)
        local = local_path_of(self.location)
        self.root = local if local is not None else str(Path(self.location))

    def local(self, name: str = "") -> Path:
        """The local path of ``name``."""
        return Path(self.root, name) if name else Path(self.root)

    def staging(self) -> Path:
        return Path(self.root)

    def exists(self) -> bool:
        return Path(self.root).is_dir()

    def listing(self, sub: str = "") -> dict[str, int]:
        """Every file under ``sub`` (recursive) with its size; {} when there is nothing."""
        base = Path(self.root, sub)
        if not base.is_dir():
            return {}
        out = {}
        for p in base.rglob("*"):
            try:  # another worker's temp file may be renamed away between the walk and the stat
                st = p.stat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                out[p.relative_to(self.root).as_posix()] = st.st_size
        return out

    def size(self, name: str) -> int | None:
        p = Path(self.root, name)
        return p.stat().st_size if p.is_file() else None

    def is_regular(self, name: str) -> bool:
        """A plain file (not a FIFO, device or folder): the only kind sftdata opens."""
        try:
            return stat.S_ISREG(os.stat(Path(self.root, name)).st_mode)
        except OSError:
            return False

    def read_bytes(self, name: str) -> bytes:
        """A metadata file whole, through the one opener (regular files only, size-capped)."""
        return read_regular(Path(self.root, name), what=f"{display(self.location)}/{name}")

    def open_read(self, name: str) -> BinaryIO:
        return open_regular(Path(self.root, name), what=f"{display(self.location)}/{name}")

    def sha256(self, name: str, block: int = 1 << 22) -> str:
        h = hashlib.sha256()
        with self.open_read(name) as f:
            for chunk in iter(lambda: f.read(block), b""):
                h.update(chunk)
        return h.hexdigest()

    def make(self) -> None:
        Path(self.root).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a whole file atomically: readers see the old one or the new one."""
        atomic_write_bytes(Path(self.root, name), data)

    def publish(self, local: Path, name: str) -> None:
        target = Path(self.root, name)
        if local.resolve() != target.resolve():
            os.replace(local, target)

    def publish_staged(self, names: Iterable[str]) -> None:
        """Workers wrote straight into the folder: nothing to move."""

    def delete(self, name: str) -> None:
        Path(self.root, name).unlink(missing_ok=True)

    def delete_tree(self, sub: str) -> None:
        shutil.rmtree(Path(self.root, sub), ignore_errors=True)

    def clear(self) -> None:
        shutil.rmtree(self.root)
        Path(self.root).mkdir(parents=True)


class RemoteFolder(Folder):
    remote = True

    def __init__(self, location: str | os.PathLike) -> None:
        self.location = str(location)
        self.fs, self.root = filesystem(self.location)
        self.atomic_put = self.fs.type_name in _ATOMIC_PUT

    def staging(self) -> Path:
        """Where workers write a chunk's files before publishing them. One per output location and
        machine, so a retried task or a resumed run on the same node finds and replaces its own
        leftovers."""
        key = hashlib.sha256(self.location.encode()).hexdigest()[:16]
        return Path(os.environ.get("SFTDATA_STAGING") or tempfile.gettempdir(), f"sftdata-staging-{key}")

    def drop_staging(self) -> None:
        shutil.rmtree(self.staging(), ignore_errors=True)

    def exists(self) -> bool:
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def listing(self, sub: str = "") -> dict[str, int]:
        from pyarrow import fs as pafs

        sel = pafs.FileSelector(self._path(sub), recursive=True, allow_not_found=True)
        prefix = len(self.root) + 1
        return {i.path[prefix:]: i.size for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File}

    def size(self, name: str) -> int | None:
        info = self.fs.get_file_info(self._path(name))
        return info.size if info.type.name == "File" else None

    def is_regular(self, name: str) -> bool:
        return self.size(name) is not None

    def read_bytes(self, name: str) -> bytes:
        """A metadata file whole; refused above the metadata limit before it is downloaded."""
        size, limit = self.size(name), metadata_limit()
        if size is not None and size > limit:
            raise UnsafeFileError(f"{self}/{name}: {size} bytes, more than the {limit} bytes a metadata file may "
                                  "have (SFTDATA_MAX_METADATA_BYTES); nothing was read")
        with self.fs.open_input_stream(self._path(name), compression=None) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise UnsafeFileError(f"{self}/{name}: more than the {limit} bytes a metadata file may have")
        return data

    def open_read(self, name: str) -> BinaryIO:
        """A seekable binary file; pyarrow reads Arrow IPC from it without a local copy."""
        return self.fs.open_input_file(self._path(name))

    def sha256(self, name: str, block: int = 1 << 22) -> str:
        h = hashlib.sha256()
        with self.fs.open_input_stream(self._path(name), compression=None) as f:
            for chunk in iter(lambda: f.read(block), b""):
                h.update(chunk)
        return h.hexdigest()

    def make(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile(prefix=".sftdata-", delete=False) as tmp:
            tmp.write(data)
        try:
            self.publish(Path(tmp.name), name)
        finally:
            Path(tmp.name).unlink(missing_ok=True)

    def publish(self, local: Path, name: str) -> None:
        """Upload a committed local file as ``name`` and remove the local copy."""
        target = self._path(name)
        parent = target.rsplit("/", 1)[0]
        if not self.atomic_put:  # object stores have no folders to make
            self.fs.create_dir(parent, recursive=True)
        dest = target if self.atomic_put else f"{parent}/.{target.rsplit('/', 1)[1]}.tmp{os.getpid()}"
        try:
            with open(local, "rb") as src, self.fs.open_output_stream(dest, compression=None) as out:
                shutil.copyfileobj(src, out, 1 << 22)
        except BaseException:
            # pyarrow completes an S3 upload on close even when the copy was interrupted: take the
            # partial object away (best effort; without its done-marker no reader trusts it anyway)
            with contextlib.suppress(Exception):
                self.fs.delete_file(dest)
            raise
        if dest != target:
            self.fs.move(dest, target)
        local.unlink()

    def delete(self, name: str) -> None:
        try:
            self.fs.delete_file(self._path(name))
        except FileNotFoundError:
            pass

    def delete_tree(self, sub: str) -> None:
        try:
            self.fs.delete_dir(self._path(sub))
        except FileNotFoundError:
            pass

    def clear(self) -> None:
        self.fs.delete_dir_contents(self.root, missing_dir_ok=True)


def staging_for(folder: Folder) -> Path:
    """Where workers write before publishing (the folder itself when local)."""
    return folder.staging()


def work_dir(folder: Folder) -> Path:
    """The staging copy of ``_chunks/``, created when missing."""
    path = folder.staging() / WORK_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


__all__ = ["Folder", "LocalFolder", "RemoteFolder", "staging_for", "work_dir"]
