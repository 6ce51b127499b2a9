"""Run a pipeline over input files: plan chunks, process them on N workers, commit the folder.

The commit protocol, in order: every chunk writes its shards (temp name, fsync, rename) and then
its done-marker in ``_chunks/``; when all chunks are done the driver writes ``quarantine.jsonl``,
the ``datasets`` metadata and, last, ``manifest.json``; only then is ``_chunks/`` removed. A
folder without a manifest is never a finished run, and ``--resume`` redoes only chunks without a
done-marker, so a resumed run ends byte-identical to an uninterrupted one.

The output may also be a pyarrow filesystem URI (``s3://bucket/prefix``): the same protocol runs
through ``sftdata.storage.Folder``, each file written whole on local disk and then uploaded.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from sftdata.config import Settings
from sftdata.constants import MANIFEST_NAME, QUARANTINE_NAME, WORK_DIR
from sftdata.readers.jsonl import Chunk, auto_chunk_size, expand_inputs
from sftdata.readers.sources import plan_chunks
from sftdata.stages import (
    ChunkResult,
    RecordProcessor,
    hash_chunk,
    process_chunk,
    worker_hash,
    worker_init,
    worker_run,
)
from sftdata.storage import Folder, display, staging_for
from sftdata.tokenizer import load_tokenizer
from sftdata.writers.manifest import build_manifest, write_dataset_metadata

PLAN_NAME = f"{WORK_DIR}/plan.json"


class RunError(Exception):
    """A run that cannot start or finish (bad output folder, unreadable input, ...)."""


@dataclass
class RunSummary:
    output: str  # the location as given: a folder or a pyarrow filesystem URI
    manifest: dict
    chunks_total: int = 0
    chunks_skipped: int = 0
    audit: object | None = None
    extra: dict = field(default_factory=dict)


def _prepare_output(out: Folder, resume: bool, overwrite: bool) -> None:
    if not out.remote and out.local().exists() and not out.local().is_dir():
        raise RunError(f"output {out} exists and is not a folder")
    if out.exists() and (bool(out.listing()) if out.remote else any(out.local().iterdir())):
        if overwrite:
            out.clear()
        elif not resume:
            raise RunError(f"output folder {out} is not empty; pass --resume to continue a run there "
                           "or --overwrite to replace it (nothing was changed)")
    probe = f".write-probe{os.getpid()}"
    try:
        out.make()
        out.write_bytes(probe, b"")
        out.delete(probe)
    except OSError as exc:
        raise RunError(f"output folder {out} is not writable: {exc.strerror or exc}") from None


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _plan(settings: Settings, inputs: list[str]) -> tuple[list[Path], list[Chunk], dict]:
    files = expand_inputs(inputs)
    total = sum(_size(p) for p in files)
    size = auto_chunk_size(total) if settings.chunk_size == "auto" else int(settings.chunk_size)
    chunks = plan_chunks(files, size, settings.input_format, settings.max_record_bytes,
                         settings.max_decompressed_bytes, settings.fields)
    # keyed by resolved path: two inputs may share a file name in different folders
    formats = {str(Path(c.path).parent) if c.kind == "hf_dataset" else c.path: c.format for c in chunks}
    plan = {
        "settings": settings.output_settings(),
        "chunk_bytes": size,
        "inputs": [{"path": display(str(p.resolve())), "name": p.name, "bytes": _size(p), "mtime_ns": p.stat().st_mtime_ns,
                    "format": formats.get(str(p.resolve()), settings.input_format)} for p in files],
        "chunks": len(chunks),
    }
    return files, chunks, plan


def _check_finished_matches(manifest: dict, settings: Settings, inputs: list[str], out: Path) -> None:
    """`--resume` on a finished folder is a no-op only if it was made from the same inputs and settings."""
    files = expand_inputs(inputs)
    recorded = {k: v for k, v in manifest.get("pipeline", {}).items() if k not in ("chunk_bytes", "audit")}
    same_inputs = [(i["name"], i["bytes"]) for i in manifest.get("inputs", [])] == [(p.name, _size(p)) for p in files]
    if recorded != orjson.loads(orjson.dumps(settings.output_settings())) or not same_inputs:
        raise RunError(f"{out} holds a finished run with other inputs or settings; use --overwrite to replace it")


def _marker(index: int) -> str:
    return f"{WORK_DIR}/chunk-{index:06d}.json"


def _load_done(out: Folder, chunks: list[Chunk]) -> dict[int, ChunkResult]:
    """Done-markers whose shards are all present with their recorded size."""
    done = {}
    files = out.listing()
    for c in chunks:
        if _marker(c.index) not in files:
            continue
        try:
            res = ChunkResult.from_json(orjson.loads(out.read_bytes(_marker(c.index))))
        except (orjson.JSONDecodeError, TypeError, KeyError):
            continue
        if all(files.get(s.file) == s.bytes for s in res.shards):
            done[c.index] = res
    return done


def _clean_partial(out: Folder, pending: list[Chunk]) -> None:
    """Temp files of a killed run, and every file of a chunk that is to be redone (marker first)."""
    redo = tuple(f"shard-{c.index:06d}-" for c in pending)
    names = out.listing()
    for c in pending:
        if _marker(c.index) in names:
            out.delete(_marker(c.index))
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if (base.startswith(".") and ".tmp" in base) or name.startswith(redo):
            out.delete(name)


def run_pipeline(settings: Settings, inputs: list[str], output: str | os.PathLike, *, workers: int | None = None,
                 resume: bool = False, overwrite: bool = False, executor: str = "local",
                 ray_address: str | None = None,
                 progress: Callable[[ChunkResult, int, int], None] | None = None) -> RunSummary:
    out = Folder(output)
    if resume and out.size(MANIFEST_NAME) is not None and not out.listing(WORK_DIR):
        manifest = orjson.loads(out.read_bytes(MANIFEST_NAME))
        _check_finished_matches(manifest, settings, inputs, out)
        return RunSummary(out.location, manifest, manifest.get("chunks", 0), manifest.get("chunks", 0))
    try:
        files, chunks, plan = _plan(settings, inputs)
    except OSError as exc:
        raise RunError(f"cannot read input: {exc}") from None
    if executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # before touching the output folder
            raise RunError("--executor ray needs Ray: pip install 'sftdata[ray]'")
    _prepare_output(out, resume, overwrite)
    tokenizer = load_tokenizer(settings.tokenizer, settings.encoder)  # fail fast, and share with forks
    staging = staging_for(out)
    (staging / WORK_DIR).mkdir(parents=True, exist_ok=True)
    plan_bytes = orjson.dumps(plan, option=orjson.OPT_SORT_KEYS)
    if out.size(PLAN_NAME) is not None and out.read_bytes(PLAN_NAME) != plan_bytes:
        raise RunError(f"{out} holds a run with other inputs or settings; --resume needs the same ones "
                       "(or use --overwrite)")
    out.write_bytes(PLAN_NAME, plan_bytes)
    done = _load_done(out, chunks) if resume else {}
    pending = [c for c in chunks if c.index not in done]
    _clean_partial(out, pending)
    if out.remote:  # this machine's leftovers of an earlier attempt
        _clean_partial(Folder(staging), pending)
    results: dict[int, ChunkResult] = dict(done)
    n_workers = max(1, min(workers or settings.resolved_workers(), len(pending) or 1))

    def record(res: ChunkResult) -> None:
        results[res.index] = res
        if progress:
            progress(res, len(results), len(chunks))

    for res in done.values():
        if progress:
            progress(res, len(results), len(chunks))
    drops = _find_duplicates(chunks, settings, out, n_workers) if settings.dedupe == "exact" and pending else {}
    if executor == "ray":
        from sftdata.executors.ray import run_chunks_on_ray

        for res in run_chunks_on_ray(pending, settings, out.location, ray_address, n_workers, drops):
            record(res)
    else:
        try:
            if n_workers == 1 or len(pending) <= 1:
                proc = RecordProcessor(settings, tokenizer)
                for c in pending:
                    record(process_chunk(c, settings, out.location, proc, drops.get(c.index)))
                    fault_point("chunk_done")
            else:
                _run_pool(pending, settings, out, n_workers, record, drops)
        except OSError as exc:  # disk full, input gone, permissions: name the cause, keep what is committed
            where = f" ({exc.filename})" if exc.filename else ""
            raise RunError(f"{exc.strerror or exc}{where}; the {len(results)} chunk(s) committed so far are kept "
                           f"in {out}: fix the cause and rerun with --resume") from exc
    fault_point("before_finalize")
    ordered = [results[c.index] for c in chunks]
    manifest = _finalize(out, settings, tokenizer, plan, files, ordered)
    return RunSummary(out.location, manifest, len(chunks), len(done))


def _find_duplicates(chunks: list[Chunk], settings: Settings, out: Folder,
                     n_workers: int) -> dict[int, dict[int, str]]:
    """First pass of ``dedupe: exact``: hash every record, keep the first occurrence in input order.

    Returns, per chunk, the lines to drop and the id each one duplicates. Pure function of the
    input, so the kept rows are the same for any number of workers and on resume.
    """
    if n_workers == 1 or len(chunks) == 1:
        proc = RecordProcessor(settings)
        per_chunk = [hash_chunk(c, settings, proc) for c in chunks]
    else:
        with _worker_pool(settings, out, n_workers) as pool:
            per_chunk = list(pool.map(worker_hash, chunks))
    first: dict[str, str] = {}
    drops: dict[int, dict[int, str]] = {}
    for chunk, hashes in zip(chunks, per_chunk, strict=True):
        for line, h, rid in hashes:
            if h in first:
                drops.setdefault(chunk.index, {})[line] = first[h]
            else:
                first[h] = rid
    return drops


@contextmanager
def _worker_pool(settings: Settings, out: Folder, n_workers: int) -> Iterator[ProcessPoolExecutor]:
    """The process pool both passes use. A worker that dies (SIGKILL, OOM killer) fails the run
    loudly instead of hanging; the chunks committed so far stay, so ``--resume`` continues."""
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=worker_init,
                               initargs=(settings, out.location, os.getpid()))
    try:
        yield pool
    except BrokenProcessPool:
        pool.shutdown(cancel_futures=True)
        raise RunError("a worker process died unexpectedly (killed by a signal or out of memory); the "
                       f"chunks committed so far are kept in {out}: rerun with --resume to continue") from None
    except BaseException:
        pool.shutdown(cancel_futures=True)
        raise
    pool.shutdown()


def _run_pool(pending: list[Chunk], settings: Settings, out: Folder, n_workers: int,
              record: Callable[[ChunkResult], None], drops: dict[int, dict[int, str]] | None = None) -> None:
    """Chunks on the worker pool, recorded as they complete."""
    with _worker_pool(settings, out, n_workers) as pool:
        futures = [pool.submit(worker_run, c, (drops or {}).get(c.index)) for c in pending]
        for fut in as_completed(futures):
            record(fut.result())
            fault_point("chunk_done")


def fault_point(name: str) -> None:
    """Test hook: ``SFTDATA_FAULT=name:N`` SIGKILLs this process the N-th time ``name`` is reached.

    Used by the kill/resume tests to die at exact points of the commit protocol.
    """
    spec = os.environ.get("SFTDATA_FAULT")
    if not spec or not spec.startswith(name + ":"):
        return
    _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if _FAULT_COUNTS[name] >= int(spec.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_COUNTS: dict[str, int] = {}


def _finalize(out: Folder, settings: Settings, tokenizer, plan: dict, files: list[Path],
              results: list[ChunkResult]) -> dict:
    staging = staging_for(out)
    with open(staging / f".{QUARANTINE_NAME}.tmp", "wb") as q:
        for res in results:
            with out.open_read(f"{WORK_DIR}/chunk-{res.index:06d}.quarantine.jsonl") as f:
                shutil.copyfileobj(f, q, 1 << 20)
        q.flush()
        os.fsync(q.fileno())
    os.replace(staging / f".{QUARANTINE_NAME}.tmp", staging / QUARANTINE_NAME)
    out.publish(staging / QUARANTINE_NAME, QUARANTINE_NAME)
    seen: dict[str, str] = {}
    duplicates: list[dict] = []
    id_counts: Counter = Counter(rid for res in results for _, rid in res.hashes)
    repeated_ids = sorted(rid for rid, n in id_counts.items() if n > 1)
    for res in results:
        duplicates.extend({"id": rid, "duplicate_of": first} for rid, first in res.dropped_duplicates)
        for h, rid in res.hashes:
            if h in seen:
                duplicates.append({"id": rid, "duplicate_of": seen[h]})
            else:
                seen[h] = rid
    shards = [s for res in results for s in res.shards]
    from sftdata.packing import PACKED_SCHEMA
    from sftdata.writers.arrow import BASE_SCHEMA

    schema = PACKED_SCHEMA if settings.packing == "bfd" else BASE_SCHEMA
    listed = len(shards)
    shards = write_dataset_metadata(staging, shards, schema)
    if out.remote:
        for name in ["dataset_info.json", "state.json"] + ([s.file for s in shards] if not listed else []):
            out.publish(staging / name, name)
    counts = Counter()
    rejected: Counter = Counter()
    truncated: list[str] = []
    for res in results:
        for key in ("records_read", "records_written", "blank_lines", "special_text_records"):
            counts[key] += getattr(res, key)
        rejected.update(res.rejected)
        truncated.extend(res.truncated_ids)
    manifest = build_manifest(settings, tokenizer, plan, files, shards, counts, rejected, truncated, duplicates,
                              schema, repeated_ids)
    fault_point("before_manifest")
    out.write_bytes(MANIFEST_NAME, orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    out.delete_tree(WORK_DIR)
    if out.remote:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
