"""Inputs on a pyarrow filesystem (``s3://bucket/data/*.jsonl``, ``gs://``, ``hdfs://``, ``file://``).

The planner and the readers were written against local paths; a ``RemoteFile`` carries the few
things they ask of a ``Path`` (name, size, mtime), and ``open_input`` gives every reader one
buffered, seekable binary file whatever the source, so byte-range chunks, compressed streams and
parquet row groups all read the same way. Each worker (or Ray task) opens its own filesystem from
the URI, whose query (``?endpoint_override=...``) travels with it.
"""

from __future__ import annotations

import fnmatch
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

from sftdata.storage import display, filesystem, is_uri, split_uri

_MAGIC = set("*?[")


@dataclass(frozen=True)
class RemoteFile:
    """An input file on a pyarrow filesystem, found by ``expand_remote``."""

    uri: str  # scheme://path?query, enough for any process to open it
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return unquote(split_uri(self.uri)[0].rsplit("/", 1)[-1])

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.name)[1]

    def resolve(self) -> RemoteFile:
        return self

    def stat(self) -> SimpleNamespace:
        return SimpleNamespace(st_size=self.size, st_mtime_ns=self.mtime_ns)

    def is_dir(self) -> bool:
        return False

    def is_file(self) -> bool:
        return True

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:  # so that `open(remote_file)` fails loudly instead of reading a local name
        raise TypeError(f"{display(self.uri)} is not a local file; read it with sftdata.stages.read.remote.open_input")


def expand_remote(pattern: str, suffixes: tuple[str, ...]) -> list[RemoteFile]:
    """A URI naming a file, a folder (its files ending in ``suffixes``, recursively) or a glob.

    Each file's URI is the given one (user part and query kept, so workers open the same
    filesystem with the same credentials) plus its percent-encoded path below the glob's fixed
    part. Raises ``FileNotFoundError`` when nothing matches.
    """
    from pyarrow import fs as pafs

    head, query = split_uri(pattern)
    scheme, rest = head.split("://", 1)
    if not rest.strip("/"):
        raise FileNotFoundError(f"input {display(pattern)} names no bucket or path")
    parts = rest.split("/")
    fixed = next((i for i, p in enumerate(parts) if _MAGIC & set(p)), len(parts))
    base_head = f"{scheme}://{'/'.join(parts[:fixed])}"
    fs, base = filesystem(base_head + query)

    def found(info) -> RemoteFile:
        rel = info.path[len(base):].lstrip("/")
        uri = f"{base_head.rstrip('/')}/{quote(rel)}{query}" if rel else base_head + query
        return RemoteFile(uri, info.size, info.mtime_ns or 0)

    if fixed == len(parts):
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.File:
            return [found(info)]
        if info.type != pafs.FileType.Directory:
            raise FileNotFoundError(f"input {display(pattern)} does not exist")
        if fs.get_file_info(f"{base}/state.json").type == pafs.FileType.File:
            raise FileNotFoundError(f"input {display(pattern)} looks like a `datasets` folder; those are read "
                                    "from local paths only (copy it, or pass its .arrow files' source instead)")
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        hits = [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffixes)]
    else:
        want = "/".join([base, *parts[fixed:]]) if base else "/".join(parts[fixed:])
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        hits = [i for i in infos if i.type == pafs.FileType.File and _glob_match(i.path, want)]
    if not hits:
        raise FileNotFoundError(f"input {display(pattern)} matched no file")
    return [found(i) for i in sorted(hits, key=lambda i: i.path)]


def _glob_match(path: str, pattern: str) -> bool:
    """Shell-style, component by component; ``**`` matches any number of folders."""
    segs, pats = path.split("/"), pattern.split("/")

    def match(i: int, j: int) -> bool:
        if j == len(pats):
            return i == len(segs)
        if pats[j] == "**":
            return any(match(k, j + 1) for k in range(i, len(segs) + 1))
        return i < len(segs) and fnmatch.fnmatchcase(segs[i], pats[j]) and match(i + 1, j + 1)

    return match(0, 0)


def open_input(path: str | os.PathLike | RemoteFile) -> BinaryIO:
    """A buffered, seekable binary file for a local path or an input URI."""
    location = path.uri if isinstance(path, RemoteFile) else str(path)
    if not is_uri(location):
        return open(location, "rb")
    fs, inner = filesystem(location)
    return io.BufferedReader(fs.open_input_file(inner), buffer_size=1 << 20)


def input_size(path: str | os.PathLike | RemoteFile) -> int:
    location = path.uri if isinstance(path, RemoteFile) else str(path)
    if not is_uri(location):
        return os.path.getsize(location)
    fs, inner = filesystem(location)
    return fs.get_file_info(inner).size


@contextmanager
def open_parquet(path: str) -> Iterator[Any]:
    """A ``pyarrow.parquet.ParquetFile`` over a local path (memory-mappable) or an input URI,
    closed with its source at the end of the block."""
    import pyarrow.parquet as pq

    if not is_uri(path):
        with pq.ParquetFile(path) as f:
            yield f
        return
    with open_input(path) as source, pq.ParquetFile(source) as f:
        yield f


__all__ = ["RemoteFile", "expand_remote", "open_input", "input_size", "open_parquet"]
