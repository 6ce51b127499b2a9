"""Manifest-versus-shards integrity: is every file the manifest promises there, whole and unchanged?

Why a separate pass: a shard that lost its tail in a copy, or had one byte flipped on a bad disk, can
still parse as Arrow and even pass the mask rules on the rows that remain. Only the manifest's
recorded size and sha256 catch that, and naming the damaged *file* (missing, extra, truncated,
corrupt) is what an operator needs to re-copy it. ``sftdata verify DIR`` is this module alone;
``sftdata audit`` runs it first and then checks the rows.

The module also owns shard *access* for the row checks: the column and type check, reading list
columns as flat numpy arrays with offsets, slicing tables into bounded chunks, and the few numpy
helpers over offsets and sorted position arrays that the rules share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sftdata.audit.arrays import list_parts
from sftdata.constants import IGNORE_INDEX
from sftdata.errors import AuditError, MalformedInputError, ManifestError, UnsafeFileError
from sftdata.storage import Folder
from sftdata.storage.layout import (
    DUPLICATES_NAME,
    MANIFEST_NAME,
    QUARANTINE_NAME,
    REPEATED_NAME,
    SHARD_FILE,
    TRUNCATED_NAME,
    name_problem,
)
from sftdata.storage.opener import map_regular


class MalformedDataError(AuditError, MalformedInputError):
    """Data the rules cannot be applied to (a row whose labels do not line up with its ids, ids
    that are strings, a file cut short): one line naming the file, the row and the problem."""


@dataclass
class ShardProblem:
    """One damaged file. ``kind``: missing (listed, not on disk), extra (a shard-like file the manifest
    does not list), truncated / size_mismatch, corrupt (right size, wrong sha256), unreadable (not
    Arrow IPC), count_mismatch (rows, tokens or the accounting differ), bad_entry (not a plain
    file name, or listed twice), state_mismatch (state.json lists other shards)."""

    file: str
    kind: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "kind": self.kind, "message": self.message}


@dataclass
class IntegrityReport:
    """What `verify_folder` found; ``ok`` means every listed shard is present, whole and unchanged."""

    path: str
    shards_listed: int = 0
    shards_checked: int = 0
    bytes_checked: int = 0
    problems: list[ShardProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def files_with(self, kind: str) -> list[str]:
        return [p.file for p in self.problems if p.kind == kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "shards_listed": self.shards_listed,
            "shards_checked": self.shards_checked,
            "bytes_checked": self.bytes_checked,
            "problems": [p.to_json() for p in self.problems],
        }

    def summary_text(self) -> str:
        head = (
            f"verify {self.path}: {self.shards_checked}/{self.shards_listed} shards, "
            f"{self.bytes_checked} bytes checked"
        )
        if self.ok:
            return head + "\nOK: every shard matches the manifest"
        lines = [head, f"FAILED: {len(self.problems)} problem(s)"]
        lines += [f"  {p.kind:<15} {p.file}: {p.message}" for p in self.problems]
        return "\n".join(lines)


def open_output(location: str | Path | Folder) -> Folder:
    """The folder to check: a local path or a pyarrow filesystem URI (``s3://...``)."""
    if isinstance(location, Folder):
        return location
    try:
        return Folder(location)
    except OSError as exc:
        raise AuditError(str(exc)) from None


def load_manifest(location: str | Path | Folder, check_names: bool = True) -> dict[str, Any]:
    """Read ``manifest.json`` through ``sftdata.manifest.read_manifest``; any reason it cannot be
    used is an `AuditError` (usage/I/O, exit 2). ``check_names``: see ``read_manifest``."""
    from sftdata.manifest import read_manifest

    try:
        return read_manifest(open_output(location), check_names=check_names).to_json()
    except ManifestError as exc:
        raise AuditError(str(exc)) from None


def read_shard(folder: Folder, name: str) -> pa.Table:
    """The whole shard; memory-mapped when local, so the list columns' values stay on disk until
    touched, and read straight from the filesystem (no local copy) when remote."""
    return map_shard(folder, name)[0]


def map_shard(folder: Folder, name: str) -> tuple[pa.Table, Any]:
    """``read_shard``, and the memory map under the table (None when remote): a reader going through
    the shard slice by slice lets go of the pages it has read (``release_pages``), so a large shard
    costs the resident memory of a slice, not of the file."""
    if not folder.remote:  # the one opener: a FIFO would block open() forever (issue 14)
        try:
            mapped = map_regular(folder.local(name), what=f"{folder}/{name}")
        except UnsafeFileError as exc:
            raise OSError(str(exc)) from None
        return pa.ipc.open_stream(pa.py_buffer(mapped)).read_all(), mapped
    with folder.open_read(name) as source:
        return pa.ipc.open_stream(source).read_all(), None


def shard_counts(table: pa.Table) -> dict[str, int]:
    """Rows, tokens and trained tokens (labels other than IGNORE_INDEX), the manifest's per-shard counts."""
    if not table.num_rows:
        return {"rows": 0, "tokens": 0, "trained_tokens": 0}
    tokens = int(list_parts(table.column("input_ids"))[1].sum())
    labels = list_parts(table.column("labels"))[0]
    return {"rows": table.num_rows, "tokens": tokens, "trained_tokens": int(np.count_nonzero(labels != IGNORE_INDEX))}


def _strip_algo(value: Any) -> str:
    text = str(value or "")
    return text.split(":", 1)[1] if text.startswith("sha256:") else text


def _state_files(folder: Folder) -> list[str] | None:
    try:
        state = json.loads(folder.read_bytes("state.json").decode("utf-8"))
        return [d["filename"] for d in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError, UnsafeFileError):
        return None


def verify_folder(path: str | Path | Folder, *, counts: bool = True, manifest: dict | None = None) -> IntegrityReport:
    """Check every shard the manifest lists: exists, size, sha256, readable Arrow, and (``counts``)
    its rows, tokens and trained tokens. Unlisted shard files are reported as ``extra``.

    ``sftdata audit`` passes ``counts=False`` because its row pass recounts anyway.
    """
    folder = open_output(path)
    manifest = manifest if manifest is not None else load_manifest(folder, check_names=False)
    on_disk = folder.listing()
    report = IntegrityReport(path=str(folder), shards_listed=len(manifest["shards"]))
    problems = report.problems
    listed: set[str] = set()
    for entry in manifest["shards"]:
        name = entry["file"]
        problem = "listed twice" if name in listed else name_problem(name)
        if problem is not None:  # the one check of names (storage.layout), reported here one by one
            problems.append(ShardProblem(name, "bad_entry", problem))
            continue
        listed.add(name)
        size, want = on_disk.get(name), entry.get("bytes")
        if size is None:
            problems.append(ShardProblem(name, "missing", "listed in the manifest but not on disk"))
            continue
        report.shards_checked += 1
        report.bytes_checked += size
        if isinstance(want, int) and size != want:
            kind = "truncated" if size < want else "size_mismatch"
            problems.append(ShardProblem(name, kind, f"{size} bytes on disk, manifest says {want}"))
        elif _strip_algo(entry.get("sha256")) != folder.sha256(name):
            problems.append(ShardProblem(name, "corrupt", "sha256 differs from the manifest"))
        try:
            table = read_shard(folder, name)
            found = shard_counts(table) if counts else {}
        except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
            problems.append(ShardProblem(name, "unreadable", f"not a readable Arrow IPC stream: {exc}"))
            continue
        diffs = [f"{k} {found[k]} (manifest {entry.get(k)})" for k in found if entry.get(k) != found[k]]
        if diffs:
            problems.append(ShardProblem(name, "count_mismatch", "; ".join(diffs)))
    for name in sorted(n for n in on_disk if "/" not in n):
        if name not in listed and (SHARD_FILE.match(name) or name.endswith(".arrow")):
            problems.append(ShardProblem(name, "extra", "a shard file the manifest does not list"))
    problems.extend(_other_files(folder, manifest, on_disk))
    problems.extend(_accounting(manifest))
    state = _state_files(folder)
    order = [e["file"] for e in manifest["shards"]]
    if state is not None and state != order:
        problems.append(ShardProblem("state.json", "state_mismatch", "lists other shards than the manifest"))
    return report


def _other_files(folder: Folder, manifest: dict, on_disk: dict[str, int]) -> list[ShardProblem]:
    """quarantine.jsonl, dataset_info.json and state.json against the manifest's ``files`` entries:
    a deleted or edited quarantine, or a dataset_info.json whose features were changed, is named."""
    out = []
    for name, entry in sorted((manifest.get("files") or {}).items()):
        if not isinstance(entry, dict) or name_problem(name) is not None:
            out.append(ShardProblem(name, "bad_entry", "a `files` entry that is not a plain file name"))
            continue
        size = on_disk.get(name)
        if size is None or not folder.is_regular(name):
            out.append(ShardProblem(name, "missing", "listed in the manifest but not on disk (or not a regular file)"))
        elif size != entry.get("bytes"):
            kind = "truncated" if isinstance(entry.get("bytes"), int) and size < entry["bytes"] else "size_mismatch"
            out.append(ShardProblem(name, kind, f"{size} bytes on disk, manifest says {entry.get('bytes')}"))
        elif _strip_algo(entry.get("sha256")) != folder.sha256(name):
            out.append(ShardProblem(name, "corrupt", "sha256 differs from the manifest"))
    return out


def _accounting(manifest: dict) -> list[ShardProblem]:
    """Nothing lost: records read = rows written + rejected, the quarantine holds one line per
    rejection, and the shards' rows add up to the totals."""
    counts, totals = manifest.get("counts") or {}, manifest.get("totals") or {}
    if not counts:
        return []
    out = []
    rejected = sum((counts.get("rejected") or {}).values())
    read, written = counts.get("records_read"), counts.get("records_written")
    if read != (written or 0) + rejected:
        out.append(ShardProblem(MANIFEST_NAME, "count_mismatch", f"records read {read} != rows written {written} + "
                                                                 f"rejected {rejected}"))
    files = manifest.get("files") or {}
    for name, want, what in ((QUARANTINE_NAME, rejected, "rejection(s)"),
                             (DUPLICATES_NAME, counts.get("duplicate_records"), "duplicate_records"),
                             (TRUNCATED_NAME, counts.get("truncated_records"), "truncated_records"),
                             (REPEATED_NAME, counts.get("repeated_ids"), "repeated_ids")):
        lines = (files.get(name) or {}).get("lines") if isinstance(files.get(name), dict) else None
        if lines is not None and lines != want:
            out.append(ShardProblem(name, "count_mismatch", f"{lines} line(s), {want} {what}"))
    if manifest.get("format_version", 1) != 1:  # the lists are files of their own, each listed
        out.extend(ShardProblem(name, "missing", f"the manifest does not list it (files.{name})")
                   for name in (DUPLICATES_NAME, TRUNCATED_NAME, REPEATED_NAME) if name not in files)
    rows = sum(e.get("rows", 0) for e in manifest.get("shards", []) if isinstance(e.get("rows", 0), int))
    if totals and totals.get("rows") != rows:
        out.append(ShardProblem(MANIFEST_NAME, "count_mismatch", f"totals.rows {totals.get('rows')} != {rows} "
                                                                 "rows in the shards"))
    return out
