"""Run a mix recipe: plan every source, a first pass over all of them, the driver's decisions,
then one main pass writing every output folder (``train`` and ``eval`` of a split run, or the
folder itself), each with its own ledger.

A split run's folder is what ``datasets.DatasetDict.save_to_disk`` writes: ``dataset_dict.json``
(written last: the mark of a finished split run) beside ``train/`` and ``eval/``, each a prepared
folder of its own (manifest, shards, quarantine), so ``audit``, ``verify`` and ``inspect`` read a
split as they read any run. Rejections are the train folder's quarantine (the eval folder's is
empty); both manifests carry the whole mix's accounting under ``mix`` (docs/mixing.md).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from sftdata.commit import finalize, index_rows
from sftdata.config import Settings
from sftdata.errors import OutputFolderError, RunError, UnusableRunError, UsageError
from sftdata.executors import ExecutorFailure, get_executor
from sftdata.faults import fault_point
from sftdata.manifest import read_manifest
from sftdata.mix.chunk import MixChunk, PromptChunk, ScanChunk
from sftdata.mix.decide import Decision, accounting, decide
from sftdata.mix.facts import Needs, concatenate, keyed
from sftdata.mix.precheck import precheck
from sftdata.mix.recipe import Recipe
from sftdata.mix.splits import DATASET_DICT_NAME, sub_location
from sftdata.mix.staged import remove_rows
from sftdata.output import RunLock, check_folder, check_location, new_run_id
from sftdata.output import prepare as prepare_output
from sftdata.process.chunk import ChunkResult
from sftdata.process.dedupe import RowIndex
from sftdata.process.identity import input_digests
from sftdata.process.ledger import Ledger, input_size
from sftdata.runner import RunSummary
from sftdata.stages.read.jsonl import Chunk, auto_chunk_size, expand_inputs
from sftdata.stages.read.sources import plan_chunks
from sftdata.stages.write.arrow import MIX_SCHEMA
from sftdata.storage import Folder, display
from sftdata.storage.layout import LOCK_NAME, WORK_DIR
from sftdata.tokenizer import load_tokenizer

SPLIT_NAMES = ("train", "eval")


@dataclass
class MixSummary(RunSummary):
    mix: dict = field(default_factory=dict)  # the accounting (the manifests' ``mix``)
    splits: dict[str, dict] = field(default_factory=dict)  # split -> its manifest (a split run)


def recipe_json(recipe: Recipe) -> dict:
    """The recipe as the manifests and the plan record it (URIs without their query or user part)."""
    return {"seed": recipe.seed, "sources": [
        {"name": s.name, "input": [display(i) for i in s.inputs], "format": s.settings.input_format, "fields": s.settings.fields,
         "take": s.take.to_json()} for s in recipe.sources],
        "split": {"eval": {recipe.split.eval_kind: recipe.split.eval_value} if recipe.split.enabled else None,
                  "per_source": recipe.split.per_source,
                  "decontaminate": [display(p) for p in recipe.split.decontaminate]}}


def plan_mix(settings: Settings, recipe: Recipe) -> tuple[list[Path], list[Chunk], dict]:
    """Every source's chunks, in recipe order, each knowing its source; one plan for the ledger."""
    per_source = [(s, expand_inputs(list(s.inputs))) for s in recipe.sources]
    owner: dict[Path, str] = {}
    for s, files in per_source:
        for p in files:
            if owner.setdefault(p.resolve(), s.name) != s.name:
                raise RunError(f"input {display(str(p))} is in sources {owner[p.resolve()]} and {s.name}; a file "
                               "belongs to one source")
    total = sum(input_size(p) for _, files in per_source for p in files)
    size = auto_chunk_size(total) if settings.chunk_size == "auto" else int(settings.chunk_size)
    chunks: list[Chunk] = []
    for s, files in per_source:
        own = s.settings
        planned = plan_chunks(files, size, own.input_format, own.max_record_bytes, own.max_decompressed_bytes,
                              own.fields)
        chunks += [replace(c, index=len(chunks) + i, source=s.name) for i, c in enumerate(planned)]
    files = [p for _, files in per_source for p in files]
    formats = {str(Path(c.path).parent) if c.kind == "hf_dataset" else c.path: c.format for c in chunks}
    plan = {"settings": {**settings.output_settings(), "mix": recipe_json(recipe)}, "chunk_bytes": size,
            "inputs": [{"path": display(str(p.resolve())), "name": p.name, "bytes": input_size(p),
                        "mtime_ns": p.stat().st_mtime_ns, "format": formats.get(str(p.resolve()), "messages")}
                       for p in files],
            "chunks": len(chunks)}
    return files, chunks, plan


def _contaminated(settings: Settings, recipe: Recipe, runner) -> set[bytes]:
    """The prompt keys (``facts.keyed``) of the decontamination files' valid records."""
    paths = list(recipe.split.decontaminate)
    if not paths:
        return set()
    files = expand_inputs(paths)
    chunks = plan_chunks(files, 64 << 20, "auto", settings.max_record_bytes, settings.max_decompressed_bytes,
                         settings.fields)
    found: set[bytes] = set()
    for _index, hashes, _invalid in runner.map(PromptChunk(settings, {}), chunks):
        found.update(keyed(recipe.seed, h, "eval:") for h in hashes)
    return found


def needs_of(settings: Settings, recipe: Recipe) -> Needs:
    """The facts the recipe's decisions read (``sftdata.mix.facts``)."""
    return Needs(recipe.seed, frozenset(s.name for s in recipe.sources if s.take.kind != "all"),
                 settings.dedupe == "exact", recipe.split.enabled or bool(recipe.split.decontaminate),
                 any(s.take.kind == "tokens" for s in recipe.sources) or recipe.split.eval_kind == "tokens",
                 settings.dedupe == "exact" or bool(recipe.split.decontaminate))


def _decide(settings: Settings, recipe: Recipe, chunks: list[Chunk], runner, location: str) -> Decision:
    """The first pass (every chunk's rows staged in ``location``'s work dir) and the driver's decisions;
    a refusal removes the staged rows (nothing else was written)."""
    sources = {s.name: s.settings for s in recipe.sources}
    needs = needs_of(settings, recipe)
    staging = Folder(location).staging()
    made = [d for d in (staging / WORK_DIR, staging) if not d.exists()]  # removed again on a refusal
    try:
        per_chunk = {}
        for f in runner.map(ScanChunk(settings, sources, needs, location), chunks):
            per_chunk[f.index] = f
            fault_point("scan_done")
        digests = {i: f.digest for i, f in per_chunk.items()}
        facts = concatenate([per_chunk.pop(c.index) for c in chunks], recipe.names, needs)
        _release_freed_memory()  # the chunks' columns, copied into one table
        decision = decide(recipe, facts, _contaminated(settings, recipe, runner), needs.content)
        decision.digests, decision.needs = digests, needs
        return decision
    except UsageError:  # a refusal; after a kill, an interrupt or a failure the staged rows are kept for --resume
        remove_rows(location, chunks)
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty
        raise


def _release_freed_memory() -> None:
    """Give the first pass's freed facts back to the system before the main pass forks its workers:
    glibc keeps freed heap pages, and a forked worker starts with the driver's resident pages."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _check_top(out: Folder, *, resume: bool, overwrite: bool) -> None:
    """A split run's folder holds only ``train/``, ``eval/`` and ``dataset_dict.json`` of ours."""
    names = [n for n in out.listing() if n != LOCK_NAME] if out.exists() else []
    if not names:
        return
    if not (resume or overwrite):
        raise OutputFolderError(f"output folder {out} is not empty; pass --resume to continue a run there or "
                                "--overwrite to replace it (nothing was changed)")
    foreign = sorted({n for n in names if n.split("/", 1)[0] not in (*SPLIT_NAMES, DATASET_DICT_NAME)})
    if foreign:
        raise OutputFolderError(f"{'--overwrite' if overwrite else '--resume'} refused: {out} holds files a split "
                                f"run did not write ({', '.join(foreign[:5])}); nothing was changed")


def _split_folder(out: Folder, split: str) -> Folder:
    return Folder(sub_location(out.location, split))


def run_mix(settings: Settings, recipe: Recipe, output: str, *, workers: int | None = None, resume: bool = False,
            overwrite: bool = False, executor: str = "local", ray_address: str | None = None,
            progress=None) -> MixSummary:
    """Run the recipe into ``output`` (docs/mixing.md)."""
    if resume and overwrite:
        raise OutputFolderError("--resume and --overwrite contradict each other; pass one of them")
    if not str(output).strip():
        raise OutputFolderError("--output is empty (an unset variable?); name the folder to write into")
    inputs = [i for s in recipe.sources for i in s.inputs] + list(recipe.split.decontaminate)
    check_location(str(output), expand_inputs(inputs), inputs)
    out = Folder(output)
    with RunLock(out):
        summary = _run_locked(settings, recipe, out, workers=workers, resume=resume, overwrite=overwrite,
                              executor=executor, ray_address=ray_address, progress=progress)
    if not any(s["rows"] for s in summary.mix["sources"].values()):
        read = sum(s["records_read"] for s in summary.mix["sources"].values())
        raise UnusableRunError(f"the mix wrote no rows ({read} record(s) read): see the quarantine.jsonl of "
                               f"{display(output)}", summary)
    return summary


def _run_locked(settings: Settings, recipe: Recipe, out: Folder, *, workers, resume, overwrite, executor,
                ray_address, progress) -> MixSummary:
    try:
        files, chunks, plan = plan_mix(settings, recipe)
        precheck(recipe, chunks)  # a records budget the input cannot hold: refused before tokenizing
    except OSError as exc:
        raise RunError(f"cannot read input: {exc}") from None
    split = recipe.split.enabled
    if resume:
        finished = finished_mix(out, recipe)
        if finished is not None:
            return MixSummary(out.location, finished["train"], len(chunks), len(chunks),
                              mix=finished["train"]["mix"], splits=finished if split else {})
    if split:
        _check_top(out, resume=resume, overwrite=overwrite)
    targets = [(_split_folder(out, s), s) for s in SPLIT_NAMES] if split else [(out, "train")]
    tokenizer = load_tokenizer(settings.tokenizer)
    plan["tokenizer_fingerprint"] = tokenizer.fingerprint
    n_workers = max(1, min(workers or settings.resolved_workers(), len(chunks) or 1))
    runner = get_executor(executor, n_workers, ray_address=ray_address)
    sources = {s.name: s.settings for s in recipe.sources}
    try:
        for folder, _name in targets:  # its refusals before the first pass stages rows in the first folder
            check_folder(folder, resume=resume, overwrite=overwrite)
        decision = _decide(settings, recipe, chunks, runner, targets[0][0].location)  # refuses an unmet budget
        _release_freed_memory()
        ledgers: dict[str, Ledger] = {}
        for folder, name in targets:
            prepare_output(folder, resume=resume, overwrite=overwrite)
            ledgers[name] = Ledger(folder, chunks, copy.deepcopy(plan))  # its own plan and run id
        if split and out.size(DATASET_DICT_NAME) is not None:  # no longer a finished split run
            out.delete(DATASET_DICT_NAME)
        with contextlib.ExitStack() as stack:  # every folder's rows, spilled as each chunk is done
            indexes = {name: stack.enter_context(RowIndex()) for name in ledgers}
            skipped, results = _main_pass(ledgers, settings, sources, decision, runner, resume, progress, indexes,
                                          sync=executor != "local")
            remove_rows(targets[0][0].location, chunks)  # before the commit syncs the disk: never written there
            fault_point("before_finalize")
            mix = accounting(recipe, decision, chunks, results)
            manifests = {name: _commit(folder, ledgers[name], files, chunks, results[name], indexes[name], settings,
                                       tokenizer, {**mix, "recipe": recipe_json(recipe), "split": name if split else None})
                         for folder, name in targets}
        if split:
            out.write_bytes(DATASET_DICT_NAME, orjson.dumps({"splits": list(SPLIT_NAMES)}))
    except ExecutorFailure as exc:
        raise RunError(f"{exc}. The chunks committed so far are kept in {out}: rerun with --resume to "
                       "continue") from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise RunError(f"{exc.strerror or exc}{where}; the chunks committed so far are kept in {out}: fix the cause "
                       "and rerun with --resume") from exc
    return MixSummary(out.location, manifests["train"], len(chunks), skipped, mix=mix,
                      splits=manifests if split else {})


def split_folders(summary: MixSummary) -> list[tuple[str, str]]:
    """(split, folder location) of a finished mix: ``train`` and ``eval``, or ``train`` -> the folder itself."""
    if not summary.splits:
        return [("train", summary.output)]
    return [(name, _split_folder(Folder(summary.output), name).location) for name in SPLIT_NAMES]


def _commit(folder: Folder, ledger: Ledger, files: list[Path], chunks: list[Chunk], results: list[ChunkResult],
            index: RowIndex, settings: Settings, tokenizer, mix: dict) -> dict:
    """Check the inputs and markers of one folder, record the inputs' digests and commit it; its manifest."""
    ledger.check_commit(files, {r.index: r for r in results})
    digests = input_digests(chunks, {r.index: r.input_digest for r in results},
                            [i["path"] for i in ledger.plan["inputs"]])
    for item in ledger.plan["inputs"]:
        item["digest"] = digests[item["path"]]
    return finalize(folder, settings, tokenizer, ledger.plan, results, index, schema=MIX_SCHEMA,
                    extra={"mix": mix}).to_json()


def _main_pass(ledgers: dict[str, Ledger], settings: Settings, sources: dict[str, Settings], decision: Decision,
               runner, resume: bool, progress, indexes: dict[str, RowIndex], *,
               sync: bool) -> tuple[int, dict[str, list[ChunkResult]]]:
    """Every chunk into every folder at once, resumable chunk by chunk: a chunk is kept on
    ``--resume`` only where each folder's ledger holds it. Each result's rows go to its folder's
    ``indexes`` as it arrives (the driver keeps no list that grows with the rows)."""
    chunks = next(iter(ledgers.values())).chunks
    run_ids, done = {}, {}
    for name, ledger in ledgers.items():
        (ledger.out.staging() / WORK_DIR).mkdir(parents=True, exist_ok=True)
        run_ids[name] = ledger.open(new_run_id())
        done[name] = ledger.done() if resume else {}
    kept = set.intersection(*(set(d) for d in done.values()))
    pending = [c for c in chunks if c.index not in kept]
    for ledger in ledgers.values():
        ledger.clean(pending)
    results = {name: {i: done[name][i] for i in kept} for name in ledgers}
    for name, held in results.items():
        for r in held.values():
            index_rows(indexes[name], r)
    task = MixChunk(settings, sources, {name: ledger.out.location for name, ledger in ledgers.items()},
                    decision.routes, decision.drops, run_ids, sync=sync, digests=decision.digests,
                    needs=decision.needs)
    first = next(iter(ledgers))
    for res in runner.map(task, pending):
        for name, r in res.items():
            results[name][r.index] = r
            index_rows(indexes[name], r)
        if progress:
            progress(res[first], len(results[first]), len(chunks))
        fault_point("chunk_done")
    return len(kept), {name: [results[name][c.index] for c in chunks] for name in ledgers}


def finished_mix(out: Folder, recipe: Recipe) -> dict[str, dict] | None:
    """The manifests of a finished run of this recipe in ``out`` (``--resume`` has nothing to do), else None."""
    split = recipe.split.enabled
    if split and out.size(DATASET_DICT_NAME) is None:
        return None
    found = {}
    for name in SPLIT_NAMES if split else ("train",):
        folder = _split_folder(out, name) if split else out
        if folder.listing(WORK_DIR):
            return None
        try:
            manifest = read_manifest(folder).to_json()
        except Exception:  # noqa: BLE001 - no finished manifest: run (the ledger decides what is kept)
            return None
        if (manifest.get("mix") or {}).get("recipe") != orjson.loads(orjson.dumps(recipe_json(recipe))):
            raise RunError(f"{folder} holds a finished run of another recipe; use --overwrite to replace it")
        found[name] = manifest
    return found
