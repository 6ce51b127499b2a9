"""Locations as the user wrote them: local paths, ``file://`` and pyarrow filesystem URIs.

A location is kept as the string the user gave. A URI keeps its query (``?endpoint_override=...``)
so that any process, a forked worker or a Ray task on another node, can open the same
filesystem; ``display`` is what reports and errors show instead (no query, no user part).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any


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
