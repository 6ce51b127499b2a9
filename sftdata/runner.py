"""Run a pipeline over input files: plan chunks, run them on an executor, commit the folder.

The runner owns what must be decided in one place for the output to be deterministic and
resumable: the chunk plan (a function of the inputs and the chunk size only, never of the number
of workers), which chunks a ``--resume`` may keep, the ``dedupe: exact`` plan, and the commit
(``sftdata.commit``). *Where* each chunk runs is the executor's business (``sftdata.executors``);
*what* happens to it is ``sftdata.process.chunk``'s.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftdata.commit import finalize, index_rows
from sftdata.config import Settings
from sftdata.errors import OutputFolderError, RunError, UnusableRunError
from sftdata.executors import ExecutorFailure, get_executor
from sftdata.faults import fault_point
from sftdata.manifest import read_manifest
from sftdata.output import RunLock, check_location, new_run_id
from sftdata.output import prepare as prepare_output
from sftdata.process.chunk import ChunkResult
from sftdata.process.dedupe import DropFiles, DuplicatePlan, RowIndex
from sftdata.process.identity import input_digests
from sftdata.process.ledger import Ledger, input_size
from sftdata.process.record import RecordProcessor
from sftdata.process.tasks import ChunkTask, ProcessChunk, RenderChunk
from sftdata.stages.read.jsonl import Chunk, auto_chunk_size, expand_inputs
from sftdata.stages.read.sources import plan_chunks
from sftdata.storage import Folder, display
from sftdata.storage.layout import MANIFEST_NAME, WORK_DIR
from sftdata.tokenizer import load_tokenizer

__all__ = ["RunError", "RunSummary", "run_pipeline"]


@dataclass
class RunSummary:
    output: str  # the location as given: a folder or a pyarrow filesystem URI
    manifest: dict
    chunks_total: int = 0
    chunks_skipped: int = 0
    audit: Any = None  # the AuditReport, when ``sftdata.run`` audited the folder (``summary.audit_after``)


def _plan(settings: Settings, inputs: list[str]) -> tuple[list[Path], list[Chunk], dict]:
    files = expand_inputs(inputs)
    total = sum(input_size(p) for p in files)
    size = auto_chunk_size(total) if settings.chunk_size == "auto" else int(settings.chunk_size)
    chunks = plan_chunks(files, size, settings.input_format, settings.max_record_bytes,
                         settings.max_decompressed_bytes, settings.fields)
    # keyed by resolved path: two inputs may share a file name in different folders
    formats = {str(Path(c.path).parent) if c.kind == "hf_dataset" else c.path: c.format for c in chunks}
    plan = {
        "settings": settings.output_settings(),
        "chunk_bytes": size,
        "inputs": [{"path": display(str(p.resolve())), "name": p.name, "bytes": input_size(p),
                    "mtime_ns": p.stat().st_mtime_ns, "format": formats.get(str(p.resolve()), settings.input_format)}
                   for p in files],
        "chunks": len(chunks),
    }
    return files, chunks, plan


def _find_duplicates(chunks: list[Chunk], executor, task: ChunkTask, *, spill: bool = False
                     ) -> dict[int, dict[int, str]] | DropFiles:
    """The plan of ``dedupe: exact``: ``task`` (``RenderChunk``: (index, the chunk's
    hash run)) over ``chunks``, the runs merged: per chunk, the lines to drop and the id each one
    duplicates (the first occurrence in input order is kept).

    Pure function of the input, so the kept rows are the same for any number of workers, any
    executor and on resume. Each chunk's hashes are spilled to disk as they arrive and merged
    (``process.dedupe``), so the driver never holds every hash of the input. ``spill``: the drops
    stay on disk too, one file per chunk (``DropFiles``, for workers on this machine; the caller
    closes it).
    """
    with DuplicatePlan() as plan:
        for index, run in executor.map(task, chunks):
            plan.add_bytes(index, run)
        return plan.drop_files() if spill else plan.drops()


def _process(chunks: list[Chunk], pending: list[Chunk], executor, task: ProcessChunk,
             on_result: Callable[[ChunkResult], None]) -> None:
    """Run the pending chunks. With ``dedupe: exact``, a first pass renders every pending chunk
    (``process.rendered``) and hashes those a resumed run has; the main pass writes the pending ones
    from what was rendered, with the plan (left in ``task.drops``: the caller closes it)."""
    if task.settings.dedupe == "exact" and pending:
        task.attempt = uuid.uuid4().hex
        done = frozenset(c.index for c in chunks) - {c.index for c in pending}
        first = RenderChunk(task.settings, task.location, task.processor, attempt=task.attempt, done=done)
        task.drops = _find_duplicates(chunks, executor, first, spill=executor.name == "local")
    for res in executor.map(task, pending):
        on_result(res)


def run_pipeline(settings: Settings, inputs: list[str], output: str | os.PathLike, *, workers: int | None = None,
                 resume: bool = False, overwrite: bool = False, executor: str = "local",
                 ray_address: str | None = None,
                 progress: Callable[[ChunkResult, int, int], None] | None = None) -> RunSummary:
    """Run the pipeline into ``output``; raises ``UnusableRunError`` (after committing) when the
    folder holds nothing usable, and ``SftdataError`` subclasses for everything else."""
    if resume and overwrite:
        raise OutputFolderError("--resume and --overwrite contradict each other; pass one of them")
    if not str(output).strip():
        raise OutputFolderError("--output is empty (an unset variable?); name the folder to write into")
    check_location(str(output), expand_inputs(inputs), inputs)
    out = Folder(output)
    with RunLock(out):
        summary = _run_locked(settings, inputs, out, workers=workers, resume=resume, overwrite=overwrite,
                              executor=executor, ray_address=ray_address, progress=progress)
    check_usable(summary, inputs)
    return summary


def _commit(out: Folder, settings: Settings, tokenizer, plan: dict, ledger: Ledger, files: list[Path],
            chunks: list[Chunk], results: dict[int, ChunkResult], index: RowIndex):
    """Check the inputs and markers, record the inputs' digests, and commit the folder."""
    ledger.check_commit(files, results)
    ordered = [results[c.index] for c in chunks]
    digests = input_digests(chunks, {r.index: r.input_digest for r in ordered}, [i["path"] for i in plan["inputs"]])
    for item in plan["inputs"]:
        item["digest"] = digests[item["path"]]
    return finalize(out, settings, tokenizer, plan, ordered, index)


def _run_locked(settings: Settings, inputs: list[str], out: Folder, *, workers: int | None, resume: bool,
                overwrite: bool, executor: str, ray_address: str | None,
                progress: Callable[[ChunkResult, int, int], None] | None) -> RunSummary:
    if resume and out.size(MANIFEST_NAME) is not None and not out.listing(WORK_DIR):
        manifest = read_manifest(out)
        Ledger.check_finished(out, manifest, settings, *_plan(settings, inputs))
        return RunSummary(out.location, manifest.to_json(), manifest.chunks, manifest.chunks)
    try:
        files, chunks, plan = _plan(settings, inputs)
    except OSError as exc:
        raise RunError(f"cannot read input: {exc}") from None
    if executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # before touching the output folder
            raise RunError("--executor ray needs Ray: pip install 'sftdata[ray]'")
    tokenizer = load_tokenizer(settings.tokenizer)  # fail fast (before the output is touched), share with forks
    prepare_output(out, resume=resume, overwrite=overwrite)
    plan["tokenizer_fingerprint"] = tokenizer.fingerprint
    (out.staging() / WORK_DIR).mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out, chunks, plan)
    run_id = ledger.open(new_run_id())
    index = RowIndex()  # every row's content hash and id, spilled to disk as each chunk is done
    results: dict[int, ChunkResult] = {}
    # the local pool's workers share this machine's page cache: the commit syncs their files
    task = ProcessChunk(settings, out.location, {}, RecordProcessor(settings, tokenizer), run_id,
                        sync=executor != "local")  # the driver's processor, for the serial path

    def on_result(res: ChunkResult) -> None:
        results[res.index] = res
        if progress:
            progress(res, len(results), len(chunks))
        index_rows(index, res)
        fault_point("chunk_done")

    try:
        done = ledger.done(keep=lambda res: index_rows(index, res)) if resume else {}
        pending = [c for c in chunks if c.index not in done]
        ledger.clean(pending)
        results.update(done)
        for res in done.values():
            if progress:
                progress(res, len(results), len(chunks))
        n_workers = max(1, min(workers or settings.resolved_workers(), len(pending) or 1))
        runner = get_executor(executor, n_workers, ray_address=ray_address)
        _process(chunks, pending, runner, task, on_result)
        fault_point("before_finalize")
        manifest = _commit(out, settings, tokenizer, plan, ledger, files, chunks, results, index)
    except ExecutorFailure as exc:
        raise RunError(f"{exc}. The {len(results)} chunk(s) committed so far are kept in {out}: rerun with "
                       "--resume to continue") from None
    except OSError as exc:  # disk full, input gone, permissions: name the cause, keep what is committed
        where = f" ({exc.filename})" if exc.filename else ""
        raise RunError(f"{exc.strerror or exc}{where}; the {len(results)} chunk(s) committed so far are kept "
                       f"in {out}: fix the cause and rerun with --resume") from exc
    finally:
        index.close()
        if isinstance(task.drops, DropFiles):
            task.drops.close()
    return RunSummary(out.location, manifest.to_json(), len(chunks), len(done))


MAX_INTERNAL_ERRORS = 5  # "a handful": more than this many records failing for a bug of ours stops the run


def _shape_hints(summary: RunSummary, inputs: list[str] | None) -> str:
    """" Hint: ..." naming the shape rejected inputs look like and the flags that read them ("" if none)."""
    if not inputs:
        return ""
    from sftdata.summary import input_lines

    try:
        hints = input_lines(summary.manifest, inputs)[1]
    except Exception:  # noqa: BLE001 - a hint is never worth a failure
        return ""
    return "".join(" " + h.replace("hint: ", "Hint: ", 1) for h in hints)


def check_usable(summary: RunSummary, inputs: list[str] | None = None) -> None:
    """A committed run whose folder holds nothing usable is a failure, with its cause (and, when
    the records were of another shape, what would read them)."""
    counts = summary.manifest["counts"]
    rejected = counts["rejected"]
    top = ", ".join(f"{r} {n}" for r, n in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
    internal = rejected.get("internal_error", 0)
    if internal > MAX_INTERNAL_ERRORS:
        raise UnusableRunError(f"{internal} record(s) failed with internal_error (a fault of sftdata or of its "
                               "tokenizer, not of the data): see quarantine.jsonl for the messages", summary)
    if summary.manifest["totals"]["rows"] == 0:
        why = (f"every one of {counts['records_read']} record(s) was rejected ({top})" if counts["records_read"]
               else "the input holds no records")
        raise UnusableRunError(f"the run wrote no rows: {why}. See quarantine.jsonl; `sftdata validate` prints "
                               "each problem, and --input-format / --field read other shapes."
                               f"{_shape_hints(summary, inputs)}", summary)
