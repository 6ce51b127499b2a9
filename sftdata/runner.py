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
from sftdata.errors import OutputFolderError, RunError, UnusableRunError
from sftdata.executors import ExecutorFailure, get_executor
from sftdata.faults import fault_point
from sftdata.manifest import read_manifest
from sftdata.output import RunLock, check_location, check_markers_are_ours, new_run_id
from sftdata.output import prepare as prepare_output
from sftdata.process.chunk import ChunkResult, HashChunk, ProcessChunk
from sftdata.process.identity import InputChanged, chunk_digest, input_digests
from sftdata.process.record import RecordProcessor
from sftdata.readers.jsonl import Chunk, auto_chunk_size, expand_inputs
from sftdata.readers.sources import plan_chunks
from sftdata.storage import Folder, display
from sftdata.storage.layout import MANIFEST_NAME, PLAN_NAME, WORK_DIR, chunk_marker, chunk_quarantine, leftovers_of
from sftdata.tokenizer import load_tokenizer

__all__ = ["RunError", "RunSummary", "run_pipeline"]


@dataclass
class RunSummary:
    output: str  # the location as given: a folder or a pyarrow filesystem URI
    manifest: dict
    chunks_total: int = 0
    chunks_skipped: int = 0


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
        "inputs": [{"path": display(str(p.resolve())), "name": p.name, "bytes": _size(p),
                    "mtime_ns": p.stat().st_mtime_ns, "format": formats.get(str(p.resolve()), settings.input_format)}
                   for p in files],
        "chunks": len(chunks),
    }
    return files, chunks, plan


def _check_finished_matches(manifest, settings: Settings, inputs: list[str], out: Folder) -> None:
    """`--resume` on a finished folder is a no-op only if it was made from the same inputs and settings.

    Inputs are compared by name, size and (for manifests that record it) the digest of their
    bytes, so a same-size edit or another file of the same name and size is caught.
    """
    recorded = {k: v for k, v in manifest.pipeline.items() if k not in ("chunk_bytes", "audit")}
    if recorded != orjson.loads(orjson.dumps(settings.output_settings())):
        changed = sorted(k for k in set(recorded) | set(settings.output_settings())
                         if recorded.get(k) != orjson.loads(orjson.dumps(settings.output_settings().get(k))))
        raise RunError(f"{out} holds a finished run with other settings ({', '.join(changed)} differ); use "
                       "--overwrite to replace it")
    files, chunks, _plan_ = _plan(settings, inputs)
    now = [(p.name, _size(p)) for p in files]
    if [(i["name"], i["bytes"]) for i in manifest.inputs] != now:
        raise RunError(f"{out} holds a finished run made from other inputs (names or sizes differ); use "
                       "--overwrite to replace it")
    if all("digest" in i for i in manifest.inputs):
        digests = input_digests(chunks, {c.index: chunk_digest(c) for c in chunks}, [i["path"] for i in _plan_["inputs"]])
        for item, path, now_item in zip(manifest.inputs, files, _plan_["inputs"], strict=True):
            if digests[now_item["path"]] != item["digest"]:
                raise InputChanged(f"{out} holds a finished run, but input {path} is not the file it was made from "
                                   "(same name and size, other bytes); use --overwrite to rebuild it")


def _plan_difference(old: dict, new: dict) -> str:
    """What differs between a folder's plan and this call's (for the refusal message)."""
    diffs = []
    if old.get("tokenizer_fingerprint") != new.get("tokenizer_fingerprint"):
        diffs.append("the tokenizer (its fingerprint differs: edited files, another revision or version)")
    old_s, new_s = old.get("settings", {}), orjson.loads(orjson.dumps(new["settings"]))
    changed = sorted(k for k in set(old_s) | set(new_s) if old_s.get(k) != new_s.get(k))
    if changed:
        diffs.append(f"settings {', '.join(changed)}")
    old_in = {i.get("path"): i for i in old.get("inputs", [])}
    new_in = {i["path"]: i for i in new["inputs"]}
    for path in sorted(set(old_in) | set(new_in)):
        a, b = old_in.get(path), new_in.get(path)
        if a is None or b is None:
            diffs.append(f"input {path} {'added' if a is None else 'missing'}")
        elif (a.get("bytes"), a.get("mtime_ns")) != (b["bytes"], b["mtime_ns"]):
            diffs.append(f"input {path} (size or modification time changed)")
    if not diffs and old.get("chunk_bytes") != new["chunk_bytes"]:
        diffs.append("the chunk size")
    return "; ".join(diffs)


def _check_inputs_unchanged(plan: dict, files: list[Path]) -> None:
    """At the commit: every input still has the size and modification time the plan recorded."""
    for item, path in zip(plan["inputs"], files, strict=True):
        try:
            now = (_size(path), path.stat().st_mtime_ns)
        except OSError as exc:
            raise InputChanged(f"input {path} cannot be read any more ({exc.strerror or exc}); nothing was "
                               "committed") from None
        if now != (item["bytes"], item["mtime_ns"]):
            raise InputChanged(f"input {path} changed while the run read it ({item['bytes']} -> {now[0]} bytes); "
                               "nothing was committed: rerun with --overwrite once it is stable")


def _load_done(out: Folder, chunks: list[Chunk], run_id: str) -> dict[int, ChunkResult]:
    """Done-markers of this run whose shards are all present with their recorded size (in a local
    folder: their recorded SHA-256, and the quarantine part's), and whose input bytes are still
    the ones they were made from."""
    done = {}
    files = out.listing()
    for c in chunks:
        if chunk_marker(c.index) not in files:
            continue
        try:
            res = ChunkResult.from_json(orjson.loads(out.read_bytes(chunk_marker(c.index))))
        except (orjson.JSONDecodeError, TypeError, KeyError):
            continue
        if res.run_id != run_id or not all(files.get(s.file) == s.bytes for s in res.shards):
            continue
        if not out.remote and not _content_matches(out, c, res):
            continue
        if res.input_digest != chunk_digest(c):
            raise InputChanged(f"input {display(c.path)} changed since chunk {c.index} (bytes {c.start}-{c.end}) was "
                               f"committed into {out}: the same name, size and modification time, other bytes. "
                               "Resuming would mix old and new rows; rerun with --overwrite")
        done[c.index] = res
    return done


def _content_matches(out: Folder, chunk: Chunk, res: ChunkResult) -> bool:
    """The bytes a local done-marker vouches for are the ones it recorded (sha256 of every shard
    and of the quarantine part). A run on the local pool renames its chunk files into place
    without waiting for the disk and syncs them all at its commit, so after a power cut a marker
    can outlive its shards' bytes; this check makes such a chunk be redone. A remote folder's
    files are durable once uploaded, and their sizes are checked above."""
    part = chunk_quarantine(chunk.index)
    if res.quarantine_sha256 and (out.size(part) is None or out.sha256(part) != res.quarantine_sha256):
        return False
    return all(out.sha256(s.file) == s.sha256 for s in res.shards)


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
    check_usable(summary)
    return summary


def _run_locked(settings: Settings, inputs: list[str], out: Folder, *, workers: int | None, resume: bool,
                overwrite: bool, executor: str, ray_address: str | None,
                progress: Callable[[ChunkResult, int, int], None] | None) -> RunSummary:
    if resume and out.size(MANIFEST_NAME) is not None and not out.listing(WORK_DIR):
        manifest = read_manifest(out)
        _check_finished_matches(manifest, settings, inputs, out)
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
    run_id = new_run_id()
    if out.size(PLAN_NAME) is not None:
        old = orjson.loads(out.read_bytes(PLAN_NAME))
        diff = _plan_difference(old, plan)
        if diff:
            raise RunError(f"{out} holds a run with other inputs or settings ({diff}); --resume needs the same "
                           "ones (or use --overwrite)")
        run_id = old.get("run_id") or run_id
    plan["run_id"] = run_id
    out.write_bytes(PLAN_NAME, orjson.dumps(plan, option=orjson.OPT_SORT_KEYS))
    done = _load_done(out, chunks, run_id) if resume else {}
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
        # the local pool's workers share this machine's page cache: the commit syncs their files
        task = ProcessChunk(settings, out.location, drops, proc, run_id, sync=executor != "local")
        for res in runner.map(task, pending):
            results[res.index] = res
            if progress:
                progress(res, len(results), len(chunks))
            fault_point("chunk_done")
        fault_point("before_finalize")
        _check_inputs_unchanged(plan, files)
        current = orjson.loads(out.read_bytes(PLAN_NAME)).get("run_id")
        check_markers_are_ours(run_id, {i: r.run_id for i, r in results.items()}
                               | ({-1: current} if current != run_id else {}), out)
        ordered = [results[c.index] for c in chunks]
        digests = input_digests(chunks, {r.index: r.input_digest for r in ordered},
                                [i["path"] for i in plan["inputs"]])
        for item in plan["inputs"]:
            item["digest"] = digests[item["path"]]
        manifest = finalize(out, settings, tokenizer, plan, ordered)
    except ExecutorFailure as exc:
        raise RunError(f"{exc}. The {len(results)} chunk(s) committed so far are kept in {out}: rerun with "
                       "--resume to continue") from None
    except OSError as exc:  # disk full, input gone, permissions: name the cause, keep what is committed
        where = f" ({exc.filename})" if exc.filename else ""
        raise RunError(f"{exc.strerror or exc}{where}; the {len(results)} chunk(s) committed so far are kept "
                       f"in {out}: fix the cause and rerun with --resume") from exc
    return RunSummary(out.location, manifest.to_json(), len(chunks), len(done))


MAX_INTERNAL_ERRORS = 5  # "a handful": more than this many records failing for a bug of ours stops the run


def check_usable(summary: RunSummary) -> None:
    """A committed run whose folder holds nothing usable is a failure, with its cause."""
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
                               "each problem, and --input-format / --field read other shapes", summary)
