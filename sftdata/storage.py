"""Where a run's files live: a local folder, or any filesystem pyarrow can open (``s3://``,
``gs://``, ``hdfs://``, ``file://``).

Why one small interface instead of pyarrow everywhere: the local folder keeps its exact commit
protocol (temp name, fsync, rename, fsync of the folder), which is what the kill/resume tests
prove, while a remote folder gets the protocol object stores can give: every file is written
whole by the worker on its own disk first and then uploaded as one object (a PUT is
all-or-nothing), the chunk's done-marker after its shards, the manifest after everything.

A location is the string the user gave. A URI keeps its query (``?endpoint_override=...``) so
that any process, a forked worker or a Ray task on another node, can open the same filesystem.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from sftdata.hashing import file_sha256

# Object stores publish a PUT atomically; other filesystems get a temp name and a move.
_ATOMIC_PUT = {"s3", "gcs", "abfs"}


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def local_path_of(location: str) -> str | None:
    """The local path a ``file://`` URI names (so it keeps the local commit protocol), else None."""
    if not str(location).startswith("file://"):
        return None
    from urllib.parse import unquote

    return unquote(split_uri(str(location))[0][len("file://"):]) or "/"


def split_uri(location: str) -> tuple[str, str]:
    """``s3://b/out?x=1`` -> (``s3://b/out``, ``?x=1``): names are joined before the query."""
    head, sep, query = location.partition("?")
    scheme, colon, rest = head.partition("://")
    return scheme + colon + rest.rstrip("/"), sep + query


@lru_cache(maxsize=32)
def filesystem(location: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it); cached so a worker opens each filesystem once."""
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(location)
    except (ValueError, OSError) as exc:
        why = str(exc).replace(location, display(location))  # pyarrow quotes the URI, secrets and all
        raise OSError(f"cannot open {display(location)!r} as a pyarrow filesystem: {why}") from None


def display(location: str) -> str:
    """The location as reports may show it: no query (endpoints, tokens) and no user part
    (``s3://KEY:SECRET@bucket/...``)."""
    if not is_uri(location):
        return str(location)
    head = split_uri(location)[0]
    scheme, rest = head.split("://", 1)
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


class Folder:
    """A run's output folder. Names are relative, ``/``-separated (``_chunks/chunk-000001.json``).

    Workers write into ``staging_for(folder)`` and then ``publish``: for a local output (``file://``
    included) that is the output folder itself and publishing is a no-op.
    """

    def __init__(self, location: str | os.PathLike) -> None:
        self.location = str(location)
        local = local_path_of(self.location)
        self.remote = is_uri(self.location) and local is None
        if local is not None:
            self.root = local
        elif self.remote:
            self.fs, self.root = filesystem(self.location)
            self.atomic_put = self.fs.type_name in _ATOMIC_PUT
        else:
            self.root = str(Path(self.location))

    def __str__(self) -> str:
        return display(self.location)

    def local(self, name: str = "") -> Path:
        """The local path of ``name``; only for a local folder."""
        assert not self.remote, "a remote folder has no local path"
        return Path(self.root, name) if name else Path(self.root)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    # -- reading ------------------------------------------------------------------------------

    def exists(self) -> bool:
        if not self.remote:
            return Path(self.root).is_dir()
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def listing(self, sub: str = "") -> dict[str, int]:
        """Every file under ``sub`` (recursive) with its size; {} when there is nothing."""
        if not self.remote:
            base = Path(self.root, sub)
            if not base.is_dir():
                return {}
            return {p.relative_to(self.root).as_posix(): p.stat().st_size for p in base.rglob("*") if p.is_file()}
        from pyarrow import fs as pafs

        sel = pafs.FileSelector(self._path(sub), recursive=True, allow_not_found=True)
        prefix = len(self.root) + 1
        return {i.path[prefix:]: i.size for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File}

    def size(self, name: str) -> int | None:
        if not self.remote:
            p = Path(self.root, name)
            return p.stat().st_size if p.is_file() else None
        info = self.fs.get_file_info(self._path(name))
        return info.size if info.type.name == "File" else None

    def read_bytes(self, name: str) -> bytes:
        if not self.remote:
            return Path(self.root, name).read_bytes()
        with self.fs.open_input_stream(self._path(name), compression=None) as f:
            return f.read()

    def open_read(self, name: str) -> BinaryIO:
        """A seekable binary file; pyarrow reads Arrow IPC from it without a local copy."""
        if not self.remote:
            return open(Path(self.root, name), "rb")
        return self.fs.open_input_file(self._path(name))

    def sha256(self, name: str, block: int = 1 << 22) -> str:
        if not self.remote:
            return file_sha256(Path(self.root, name), block)
        h = hashlib.sha256()
        with self.fs.open_input_stream(self._path(name), compression=None) as f:
            for chunk in iter(lambda: f.read(block), b""):
                h.update(chunk)
        return h.hexdigest()

    # -- writing ------------------------------------------------------------------------------

    def make(self) -> None:
        if self.remote:
            self.fs.create_dir(self.root, recursive=True)
        else:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a whole file atomically: readers see the old one or the new one."""
        if not self.remote:
            from sftdata.writers.arrow import atomic_write_bytes

            atomic_write_bytes(Path(self.root, name), data)
            return
        with tempfile.NamedTemporaryFile(prefix=".sftdata-", delete=False) as tmp:
            tmp.write(data)
        try:
            self.publish(Path(tmp.name), name)
        finally:
            Path(tmp.name).unlink(missing_ok=True)

    def publish(self, local: Path, name: str) -> None:
        """Move a committed local file to ``name`` in this folder (uploaded for a remote one)."""
        if not self.remote:
            target = Path(self.root, name)
            if local.resolve() != target.resolve():
                os.replace(local, target)
            return
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
        if not self.remote:
            Path(self.root, name).unlink(missing_ok=True)
            return
        try:
            self.fs.delete_file(self._path(name))
        except FileNotFoundError:
            pass

    def delete_tree(self, sub: str) -> None:
        if not self.remote:
            shutil.rmtree(Path(self.root, sub), ignore_errors=True)
            return
        try:
            self.fs.delete_dir(self._path(sub))
        except FileNotFoundError:
            pass

    def clear(self) -> None:
        """Remove everything in the folder, keeping the folder."""
        if not self.remote:
            shutil.rmtree(self.root)
            Path(self.root).mkdir(parents=True)
            return
        self.fs.delete_dir_contents(self.root, missing_dir_ok=True)


def staging_for(folder: Folder) -> Path:
    """Where workers write a chunk's files before publishing them. One per output location and
    machine, so a retried task or a resumed run on the same node finds and replaces its own leftovers."""
    if not folder.remote:
        return folder.local()
    key = hashlib.sha256(folder.location.encode()).hexdigest()[:16]
    return Path(os.environ.get("SFTDATA_STAGING") or tempfile.gettempdir(), f"sftdata-staging-{key}")
