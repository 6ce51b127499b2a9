"""The end of a run: merge the chunks' results into the folder's final files, manifest last.

The commit protocol, in order: every chunk has written its shards and then its done-marker in
``_chunks/``; the driver writes ``quarantine.jsonl`` (the chunks' parts in input order), the
lists that grow with the records (``sftdata.sidecars``), the ``datasets`` metadata and, last,
``manifest.json``; only then is ``_chunks/`` removed. A folder
without a manifest is never a finished run. On a remote folder each file is written on local
staging and uploaded (``sftdata.storage.folder``), so the same order holds there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

from sftdata.config import Settings
from sftdata.faults import fault_point
from sftdata.manifest import Manifest, RunCounts, build_manifest
from sftdata.process.chunk import ChunkResult
from sftdata.process.dedupe import RowIndex
from sftdata.sidecars import ListFiles
from sftdata.storage import Folder
from sftdata.storage.atomic import sync_folder
from sftdata.storage.layout import (
    DATASET_INFO_NAME,
    DUPLICATES_NAME,
    MANIFEST_NAME,
    QUARANTINE_NAME,
    REPEATED_NAME,
    STATE_NAME,
    TRUNCATED_NAME,
    WORK_DIR,
    chunk_quarantine,
    temp_name,
)
from sftdata.tokenizer import Tokenizer


def merge_quarantine(out: Folder, results: list[ChunkResult]) -> dict:
    """``quarantine.jsonl``: every chunk's part, in chunk order, streamed (never held whole).
    Returns its manifest entry (bytes, sha256, lines), hashed as it is written."""
    staging = out.staging()
    tmp = staging / temp_name(QUARANTINE_NAME, os.getpid())
    h, size, lines = hashlib.sha256(), 0, 0
    with open(tmp, "wb") as q:
        for res in results:
            if not res.has_quarantine_part:
                continue
            with out.open_read(chunk_quarantine(res.index)) as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    q.write(block)
                    h.update(block)
                    size += len(block)
                    lines += block.count(b"\n")
        q.flush()
        os.fsync(q.fileno())
    os.replace(tmp, staging / QUARANTINE_NAME)
    out.publish(staging / QUARANTINE_NAME, QUARANTINE_NAME)
    return {"bytes": size, "sha256": "sha256:" + h.hexdigest(), "lines": lines}


def _entry(path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": "sha256:" + hashlib.sha256(data).hexdigest()}


def index_rows(index: RowIndex, result: ChunkResult) -> None:
    """Spill a chunk's (content hash, id) per row, its dropped duplicates and truncated ids into
    ``index`` and let go of them: the driver holds no list that grows with the rows
    (``process.dedupe``). A result from a worker carries them as bytes (``ChunkResult.compact``)."""
    packed = result.packed_lists
    if packed is not None:
        index.add_runs(result.index, packed["by_hash"], packed["by_id"])
        index.add_dropped(result.index, packed["dropped"])
        index.add_truncated(result.index, packed["truncated"])
        result.packed_lists = None
    else:
        index.add(result.index, result.hashes)
        index.add_dropped(result.index, result.dropped_duplicates)
        index.add_truncated(result.index, result.truncated_ids)
    result.hashes, result.dropped_duplicates, result.truncated_ids = [], [], []


def _unindexed(result: ChunkResult) -> bool:
    return bool(result.packed_lists is not None or result.hashes or result.dropped_duplicates
                or result.truncated_ids)


def run_counts(results: list[ChunkResult], lists: ListFiles, index: RowIndex) -> RunCounts:
    """Add the chunks up; duplicates are the dedupe drops (per chunk, in input order) and then the
    rows whose content hash repeats (``RowIndex.duplicates``). The lists (duplicates, truncated and
    repeated ids) go to ``lists`` as they are found; ``index`` holds every chunk's rows."""
    counts = RunCounts()
    for res in results:
        for rid, first in index.dropped(res.index):
            lists.duplicate(rid, first)
        for rid in index.truncated(res.index):
            lists.truncated(rid)
        counts.records_read += res.records_read
        counts.records_written += res.records_written
        counts.blank_lines += res.blank_lines
        counts.special_text_records += res.special_text_records
        counts.rejected.update(res.rejected)
        counts.unknown_keys.update(res.unknown_keys)
    for rid, first in index.duplicates():
        lists.duplicate(rid, first)
    for rid in index.repeated_ids():
        lists.repeated(rid)
    counts.duplicate_records = lists.count(DUPLICATES_NAME)
    counts.truncated_records = lists.count(TRUNCATED_NAME)
    counts.repeated_ids = lists.count(REPEATED_NAME)
    return counts


def write_lists(out: Folder, results: list[ChunkResult], index: RowIndex) -> tuple[RunCounts, dict[str, dict]]:
    """The run's counts, and the ``files`` entries of its list files, written and published."""
    for res in results:  # chunks whose rows are not in the index yet (a caller that kept them)
        if _unindexed(res):
            index_rows(index, res)
    lists = ListFiles(out)
    try:
        counts = run_counts(results, lists, index)
    except BaseException:
        lists.abort()
        raise
    return counts, lists.close()


def finalize(out: Folder, settings: Settings, tokenizer: Tokenizer, plan: dict,
             results: list[ChunkResult], index: RowIndex | None = None, schema=None,
             extra: dict | None = None) -> Manifest:
    """Write the folder's final files from the chunks' results (in chunk order); manifest last.
    ``index``: the rows of the results already spilled (``index_rows``); else made here.
    ``schema``: the shards' (default: from the packing setting); ``extra``: more manifest keys (a mix's)."""
    from sftdata.stages.pack import PACKED_SCHEMA
    from sftdata.stages.write.arrow import BASE_SCHEMA
    from sftdata.stages.write.dataset_meta import write_dataset_metadata

    files = {QUARANTINE_NAME: merge_quarantine(out, results)}
    staging = out.staging()
    shards = [s for res in results for s in res.shards]
    schema = schema or (PACKED_SCHEMA if settings.packing == "bfd" else BASE_SCHEMA)
    had_shards = bool(shards)
    shards = write_dataset_metadata(staging, shards, schema)
    files.update({name: _entry(staging / name) for name in (DATASET_INFO_NAME, STATE_NAME)})
    out.publish_staged([DATASET_INFO_NAME, STATE_NAME] + ([] if had_shards else [s.file for s in shards]))
    with RowIndex() if index is None else contextlib.nullcontext(index) as rows:
        counts, lists = write_lists(out, results, rows)
    files.update(lists)
    manifest = build_manifest(settings, tokenizer, plan, shards, counts, schema)
    manifest.files = dict(sorted(files.items()))
    manifest.extra.update(extra or {})
    if not out.remote:  # the chunks' files may still be on their way to the disk: the manifest vouches
        sync_folder(staging)  # for them, so they are made durable before it is written
    fault_point("before_manifest")
    out.write_bytes(MANIFEST_NAME, manifest.to_bytes())
    out.delete_tree(WORK_DIR)
    out.drop_staging()
    return manifest
