"""The lists that grow with the records, each in a JSON Lines file of its own beside the manifest.

Why not in ``manifest.json``: the manifest is read whole by every reader (``--resume``, audit,
verify, train, export), so it must stay the size of the shard list. A million duplicates made it
85 MB. What grows with the rows (``duplicates.jsonl``, ``truncated_ids.jsonl``,
``repeated_ids.jsonl``; names in ``storage.layout``) is streamed into these files at the commit,
before the manifest, which lists each under ``files`` with its bytes, sha256 and lines. Readers
stream them and check them against that entry, so an edited or deleted list is caught like an
edited quarantine.

Folders of manifest format version 1 hold the lists inline (``truncated_ids``, ``duplicates``,
``repeated_ids`` in the manifest); the readers here serve both.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import orjson

from sftdata.errors import ManifestError
from sftdata.storage import Folder
from sftdata.storage.atomic import fsync_file
from sftdata.storage.layout import DUPLICATES_NAME, REPEATED_NAME, TRUNCATED_NAME, temp_name

# the manifest key each list had inline in format version 1
INLINE_KEYS = {DUPLICATES_NAME: "duplicates", TRUNCATED_NAME: "truncated_ids", REPEATED_NAME: "repeated_ids"}
_BLOCK = 1 << 20


class SidecarError(ManifestError):
    """A list file the manifest names that is missing, not a regular file, or not the file it lists."""


class JsonLinesWriter:
    """One list file written on the folder's staging copy under a temporary name, hashed and counted
    as it is written; ``close`` syncs it, renames it into place, publishes it and returns its
    manifest entry (bytes, sha256, lines). Memory: one block of lines."""

    def __init__(self, out: Folder, name: str) -> None:
        self.out, self.name = out, name
        self.tmp = out.staging() / temp_name(name, os.getpid())
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in close() / abort()
        self._hash, self._buf = hashlib.sha256(), bytearray()
        self.bytes = self.lines = 0

    def add(self, obj: dict[str, Any]) -> None:
        self._buf += orjson.dumps(obj)
        self._buf += b"\n"
        self.lines += 1
        if len(self._buf) >= _BLOCK:
            self._flush()

    def _flush(self) -> None:
        self._file.write(self._buf)
        self._hash.update(self._buf)
        self.bytes += len(self._buf)
        self._buf.clear()

    def close(self) -> dict[str, Any]:
        self._flush()
        self._file.close()
        fsync_file(self.tmp)
        final = self.out.staging() / self.name
        os.replace(self.tmp, final)
        self.out.publish(final, self.name)
        return {"bytes": self.bytes, "sha256": "sha256:" + self._hash.hexdigest(), "lines": self.lines}

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


class ListFiles:
    """The three list files of a commit, open together; ``close`` returns their ``files`` entries."""

    def __init__(self, out: Folder) -> None:
        self.writers: dict[str, JsonLinesWriter] = {}
        try:
            for name in (DUPLICATES_NAME, TRUNCATED_NAME, REPEATED_NAME):
                self.writers[name] = JsonLinesWriter(out, name)
        except BaseException:
            self.abort()
            raise

    def duplicate(self, rid: str, first: str) -> None:
        self.writers[DUPLICATES_NAME].add({"id": rid, "duplicate_of": first})

    def truncated(self, rid: str) -> None:
        self.writers[TRUNCATED_NAME].add({"id": rid})

    def repeated(self, rid: str) -> None:
        self.writers[REPEATED_NAME].add({"id": rid})

    def count(self, name: str) -> int:
        return self.writers[name].lines

    def close(self) -> dict[str, dict[str, Any]]:
        return {name: w.close() for name, w in self.writers.items()}

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


def _strip(value: object) -> str:
    text = str(value or "")
    return text.split(":", 1)[1] if text.startswith("sha256:") else text


def iter_list(folder: Folder, manifest: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    """Every entry of list ``name`` (one of ``storage.layout.SIDECAR_NAMES``), streamed.

    Format version 1: the manifest's inline list (ids become ``{"id": ...}``). Later versions: the
    file, checked against its ``files`` entry; a missing, unlisted or altered file raises
    ``SidecarError`` (for an altered one after its last entry: collect before trusting).
    """
    if manifest.get("format_version") == 1:
        for item in manifest.get(INLINE_KEYS[name]) or []:
            yield item if isinstance(item, dict) else {"id": item}
        return
    entry = (manifest.get("files") or {}).get(name)
    where = f"{folder}/{name}"
    if not isinstance(entry, dict):
        raise SidecarError(f"{where}: the manifest does not list it (files.{name})")
    if folder.size(name) is None or not folder.is_regular(name):
        raise SidecarError(f"{where}: listed in the manifest but not on disk (or not a regular file)")
    h, size, lines, tail = hashlib.sha256(), 0, 0, b""
    try:
        with folder.open_read(name) as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                h.update(block)
                size += len(block)
                *whole, tail = (tail + block).split(b"\n")
                for line in whole:
                    lines += 1
                    item = orjson.loads(line)
                    if not isinstance(item, dict):
                        raise SidecarError(f"{where}: line {lines} is not a JSON object")
                    yield item
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SidecarError(f"{where}: unreadable: {exc}") from None
    if tail or size != entry.get("bytes") or lines != entry.get("lines") or h.hexdigest() != _strip(entry.get("sha256")):
        raise SidecarError(f"{where}: not the file the manifest lists ({size} bytes, {lines} lines; the manifest "
                           f"says {entry.get('bytes')} bytes, {entry.get('lines')} lines and another sha256)")


def list_ids(folder: Folder, manifest: dict[str, Any], name: str) -> frozenset[str]:
    """The ids of a short list (truncated or repeated ids), read whole and checked before use."""
    return frozenset(str(item.get("id")) for item in iter_list(folder, manifest, name))


__all__ = ["INLINE_KEYS", "JsonLinesWriter", "ListFiles", "SidecarError", "iter_list", "list_ids"]
