"""Run a pipeline over input files: plan chunks, run them on an executor, commit the folder.

The runner owns what must be decided in one place for the output to be deterministic and
resumable: the chunk plan (a function of the inputs and the chunk size only, never of the number
of workers), which chunks a ``--resume`` may keep, the ``dedupe: exact`` plan, and the commit
(``sftdata.commit``). *Where* each chunk runs is the executor's business (``sftdata.executors``);
*what* happens to it is ``sftdata.process.chunk``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from sftdata.commit import finalize
from sftdata.config import Settings
from sftdata.errors import RunError
from sftdata.executors import ExecutorFailure, get_executor
from sftdata.faults import fault_point
from sftdata.manifest import read_manifest
from sftdata.process.chunk import ChunkResult, HashChunk, ProcessChunk
from sftdata.process.record import RecordProcessor
from sftdata.readers.jsonl import Chunk, auto_chunk_size, expand_inputs
from sftdata.readers.sources import plan_chunks
from sftdata.storage import Folder, display
from sftdata.storage.layout import MANIFEST_NAME, PLAN_NAME, WORK_DIR, chunk_marker, leftovers_of
from sftdata.tokenizer import load_tokenizer

__all__ = ["RunError", "RunSummary", "run_pipeline"]


@dataclass
class RunSummary:
    output: str  # the location as given: a folder or a pyarrow filesystem URI
    manifest: dict
    chunks_total: int = 0
    chunks_skipped: int = 0


def _prepare_output(out: Folder, resume: bool, overwrite: bool) -> None:
    if not out.remote and out.local().exists() and not out.local().is_dir():
        raise RunError(f"output {out} exists and is not a folder")
    if not out.is_empty():
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
                         settings.max_decompressed_bytes)
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


def _check_finished_matches(manifest, settings: Settings, inputs: list[str], out: Folder) -> None:
    """`--resume` on a finished folder is a no-op only if it was made from the same inputs and settings."""
    files = expand_inputs(inputs)
    recorded = {k: v for k, v in manifest.pipeline.items() if k not in ("chunk_bytes", "audit")}
    same_inputs = [(i["name"], i["bytes"]) for i in manifest.inputs] == [(p.name, _size(p)) for p in files]
    if recorded != orjson.loads(orjson.dumps(settings.output_settings())) or not same_inputs:
        raise RunError(f"{out} holds a finished run with other inputs or settings; use --overwrite to replace it")


def _load_done(out: Folder, chunks: list[Chunk]) -> dict[int, ChunkResult]:
    """Done-markers whose shards are all present with their recorded size."""
    done = {}
    files = out.listing()
    for c in chunks:
        if chunk_marker(c.index) not in files:
            continue
        try:
            res = ChunkResult.from_json(orjson.loads(out.read_bytes(chunk_marker(c.index))))
        except (orjson.JSONDecodeError, TypeError, KeyError):
            continue
        if all(files.get(s.file) == s.bytes for s in res.shards):
            done[c.index] = res
    return done


def _clean_partial(out: Folder, pending: list[Chunk]) -> None:
    """Temp files of a killed run, and every file of a chunk that is to be redone (markers first)."""
    names = out.listing()
    for c in pending:
        if chunk_marker(c.index) in names:
            out.delete(chunk_marker(c.index))
    for name in leftovers_of(names, [c.index for c in pending]):
        out.delete(name)


def _find_duplicates(chunks: list[Chunk], settings: Settings, executor, proc: RecordProcessor
                     ) -> dict[int, dict[int, str]]:
    """First pass of ``dedupe: exact``: hash every record, keep the first occurrence in input order.

    Returns, per chunk, the lines to drop and the id each one duplicates. Pure function of the
    input, so the kept rows are the same for any number of workers, any executor and on resume.
    """
    per_chunk = dict(executor.map(HashChunk(settings, proc), chunks))
    first: dict[str, str] = {}
    drops: dict[int, dict[int, str]] = {}
    for chunk in chunks:
        for line, h, rid in per_chunk[chunk.index]:
            if h in first:
                drops.setdefault(chunk.index, {})[line] = first[h]
            else:
                first[h] = rid
    return drops


def run_pipeline(settings: Settings, inputs: list[str], output: str | os.PathLike, *, workers: int | None = None,
                 resume: bool = False, overwrite: bool = False, executor: str = "local",
                 ray_address: str | None = None,
                 progress: Callable[[ChunkResult, int, int], None] | None = None) -> RunSummary:
    out = Folder(output)
    if resume and out.size(MANIFEST_NAME) is not None and not out.listing(WORK_DIR):
        manifest = read_manifest(out)
        _check_finished_matches(manifest, settings, inputs, out)
        return RunSummary(out.location, manifest.to_json(), manifest.chunks, manifest.chunks)
    try:
        _files, chunks, plan = _plan(settings, inputs)
    except OSError as exc:
        raise RunError(f"cannot read input: {exc}") from None
    if executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # before touching the output folder
            raise RunError("--executor ray needs Ray: pip install 'sftdata[ray]'")
    _prepare_output(out, resume, overwrite)
    tokenizer = load_tokenizer(settings.tokenizer, settings.encoder)  # fail fast, and share with forks
    (out.staging() / WORK_DIR).mkdir(parents=True, exist_ok=True)
    plan_bytes = orjson.dumps(plan, option=orjson.OPT_SORT_KEYS)
    if out.size(PLAN_NAME) is not None and out.read_bytes(PLAN_NAME) != plan_bytes:
        raise RunError(f"{out} holds a run with other inputs or settings; --resume needs the same ones "
                       "(or use --overwrite)")
    out.write_bytes(PLAN_NAME, plan_bytes)
    done = _load_done(out, chunks) if resume else {}
    pending = [c for c in chunks if c.index not in done]
    _clean_partial(out, pending)
    if out.remote:  # this machine's leftovers of an earlier attempt
        _clean_partial(Folder(str(out.staging())), pending)
    results: dict[int, ChunkResult] = dict(done)
    n_workers = max(1, min(workers or settings.resolved_workers(), len(pending) or 1))
    for res in done.values():
        if progress:
            progress(res, len(results), len(chunks))
    runner = get_executor(executor, n_workers, ray_address=ray_address)
    proc = RecordProcessor(settings, tokenizer)  # the driver's own, for the serial path
    try:
        drops = _find_duplicates(chunks, settings, runner, proc) if settings.dedupe == "exact" and pending else {}
        for res in runner.map(ProcessChunk(settings, out.location, drops, proc), pending):
            results[res.index] = res
            if progress:
                progress(res, len(results), len(chunks))
            fault_point("chunk_done")
    except ExecutorFailure as exc:
        raise RunError(f"{exc}. The {len(results)} chunk(s) committed so far are kept in {out}: rerun with "
                       "--resume to continue") from None
    except OSError as exc:  # disk full, input gone, permissions: name the cause, keep what is committed
        where = f" ({exc.filename})" if exc.filename else ""
        raise RunError(f"{exc.strerror or exc}{where}; the {len(results)} chunk(s) committed so far are kept "
                       f"in {out}: fix the cause and rerun with --resume") from exc
    fault_point("before_finalize")
    manifest = finalize(out, settings, tokenizer, plan, [results[c.index] for c in chunks])
    return RunSummary(out.location, manifest.to_json(), len(chunks), len(done))
