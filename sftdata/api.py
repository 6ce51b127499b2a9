"""sftdata's Python API: what the commands do, callable from a notebook, a script or a data job.

Every function takes the settings a pipeline takes, by name (``Options``: ``template``,
``max_length``, ``train_on``, ...), over an optional pipeline (a YAML path or a dict), validated by
the same schema as ``sftdata run``. Errors are the ``sftdata.errors.SftdataError`` family with the
messages the command line prints; nothing here exits the process. The work itself is the
pipeline's own code: ``encode`` runs one record through ``process.record.RecordProcessor``, ``run``
is ``runner.run_pipeline``, ``audit_data`` is ``audit.run.run_audit``. Batched encoding for
``datasets.Dataset.map`` is in ``sftdata.api_batch``.

This module is imported by ``import sftdata``: it imports no heavy library at module level.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, Union

from sftdata.api_records import EncodedRow, outcomes_of, processor_for
from sftdata.errors import FolderNotVerified, RecordRejected, UsageError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from sftdata.audit.report import AuditReport
    from sftdata.config import Settings
    from sftdata.process.validation import Checked
    from sftdata.runner import RunSummary

# a YAML file, a pipeline document, resolved Settings, or None for the defaults
Pipeline = Union[str, "os.PathLike[str]", dict, "Settings", None]


class Options(TypedDict, total=False):
    """Pipeline settings by name; each one beats the pipeline's own (as a command-line flag does).
    The names are those of ``sftdata.config.Settings`` (README, Pipeline settings)."""

    name: str
    input_format: str  # messages (default), sharegpt, alpaca, text, prompt_completion, ..., auto
    fields: dict[str, str]  # canonical key -> your key (--field)
    max_record_bytes: int | str
    max_decompressed_bytes: int | str
    max_blank_bytes: int | str
    chunk_size: int | str
    text_without_chat: str
    tree_paths: str
    completion_eos: bool
    parts: dict[str, str]
    strict_keys: bool
    dedupe: str
    template: str  # llama3, llama3.1, llama3.2 (default), llama3.3
    tokenizer: str  # builtin:llama3 (default), a tokenizer folder or a hub id
    date_string: str
    builtin_tools: list[str]
    tools_in_user_message: bool
    train_on: str  # all_assistant (default), last_assistant, ...
    max_length: int
    truncation: str  # drop (default) or truncate
    packing: str
    shard_size: int | str
    audit_enabled: bool
    min_trained_fraction: float
    max_rejected_fraction: float


def pipeline_settings(pipeline: Pipeline = None, **options: Unpack[Options]) -> Settings:
    """The resolved ``Settings``: ``pipeline`` (a YAML path, a dict, or None for the defaults) with
    ``options`` on top. Raises ``ConfigError`` (a ``UsageError``) listing every problem."""
    from sftdata.config import Settings, load_pipeline, settings_from_dict

    overrides = {k: v for k, v in options.items() if v is not None}
    if isinstance(pipeline, Settings):
        if overrides:
            raise UsageError(f"settings given twice: resolved Settings and {', '.join(overrides)}; pass the "
                             "pipeline as a path or a dict to override it")
        return pipeline
    if isinstance(pipeline, dict):
        return settings_from_dict(pipeline, "pipeline", overrides)
    return load_pipeline(pipeline, overrides)


# -- one conversation ------------------------------------------------------------------------------
def encode(record: dict | str | bytes, *, pipeline: Pipeline = None, source: str = "record", line: int = 1,
           **options: Unpack[Options]) -> EncodedRow:
    """Encode one record (a dict, or one JSON line) exactly as ``sftdata run`` would.

    Raises ``RecordRejected`` with the reason code and message of the quarantine line the run
    would write. A record without an id gets ``f"{source}:{line}"``, as a row of a run does.
    """
    proc = processor_for(pipeline_settings(pipeline, **options))
    found = outcomes_of(proc, record, source, line)
    if len(found) != 1:
        raise UsageError(f"{source}:{line}: the record holds {len(found)} conversations (tree_paths: all); "
                         "encode takes one: use sftdata.encode_dataset or sftdata.map_fn")
    outcome = found[0]
    if isinstance(outcome, RecordRejected):
        raise outcome
    return outcome


# -- a pipeline ------------------------------------------------------------------------------------
def run(pipeline: Pipeline = None, *, inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        output: str | os.PathLike[str], workers: int | None = None, resume: bool = False, overwrite: bool = False,
        executor: str = "local", ray_address: str | None = None, audit: bool | None = None,
        progress: Callable[..., None] | None = None, **options: Unpack[Options]) -> RunSummary:
    """``sftdata run``: the inputs (files, folders, globs) into the prepared folder ``output``.

    Returns the ``RunSummary`` (``output``, ``manifest``, chunk counts). ``audit`` (default: the
    pipeline's ``audit.enabled``) audits the folder, writes ``audit.json`` beside the manifest and
    sets ``summary.audit`` to the ``AuditReport``; a failed rule does not raise: check
    ``summary.audit.ok``. Raises ``UnusableRunError`` (with ``.summary``) when the committed folder
    holds no usable row, and the ``SftdataError`` family for everything else.
    """
    from sftdata.runner import run_pipeline

    settings = pipeline_settings(pipeline, **options)
    names = [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(i) for i in inputs]
    summary = run_pipeline(settings, names, os.fspath(output), workers=workers, resume=resume, overwrite=overwrite,
                           executor=executor, ray_address=ray_address, progress=progress)
    if settings.audit_enabled if audit is None else audit:
        from sftdata.summary import audit_after

        summary.audit = audit_after(summary, settings)
    return summary


# -- checking and loading --------------------------------------------------------------------------
def audit_data(data: Any, **options: Any) -> AuditReport:
    """``sftdata audit`` (``sftdata.audit`` is the audit's package, hence the name): a prepared
    folder, token data another tool wrote (a path or glob), or an in-memory ``datasets.Dataset``
    / ``DatasetDict``, with the same rules and results as the same data saved with
    ``save_to_disk``. ``options`` are ``sftdata.audit.run.run_audit``'s (``min_trained_fraction``,
    ``labels_column``, ``trainer``, ``workers``, ...). The report has ``ok``, ``statuses`` (rule ->
    pass/fail/skip), ``violation_counts`` and ``violations`` (each with its ``id``, ``shard`` and
    ``row``); ``to_json()`` is ``audit --json``."""
    from sftdata.audit.run import run_audit

    if _is_datasets_object(data):
        return _audit_in_memory(data, options)
    return run_audit(data, **options)


def _is_datasets_object(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "datasets" and hasattr(data, "save_to_disk")


def _audit_in_memory(data: Any, options: dict[str, Any]) -> AuditReport:
    """Audit a ``Dataset`` / ``DatasetDict`` as saved: ``save_to_disk`` into a temporary folder
    that lives as long as the report (its HTML page reads sample rows from it)."""
    import shutil
    import tempfile
    import weakref

    from sftdata.audit.run import run_audit

    tmp = tempfile.mkdtemp(prefix="sftdata-audit-")
    try:
        folder = os.path.join(tmp, "dataset")
        data.save_to_disk(folder)
        report = run_audit(folder, **options)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.path = f"in-memory {type(data).__name__}"
    weakref.finalize(report, shutil.rmtree, tmp, True)
    return report


@dataclass
class Prepared:
    """A prepared folder loaded for training: the rows, its manifest, and what ``verify`` found."""

    dataset: Any  # datasets.Dataset, memory-mapped
    manifest: dict
    integrity: Any = None  # sftdata.audit.integrity.IntegrityReport (None with verify=False)


def load(folder: str | os.PathLike[str], *, verify: bool = True) -> Prepared:
    """A prepared folder as a ``datasets.Dataset`` with its manifest, after ``sftdata verify``
    (every shard present, whole and unchanged). Raises ``FolderNotVerified`` (exit 1, with
    ``.report``) when it is not, ``AuditError`` (a ``UsageError``) when it is no prepared folder."""
    from sftdata.audit.integrity import load_manifest, verify_folder
    from sftdata.planning.folder import load_shards
    from sftdata.storage import is_uri, local_path_of

    location = os.fspath(folder)
    if is_uri(location):
        if local_path_of(location) is None:
            raise UsageError(f"{location}: load reads a local folder (datasets memory-maps the shards); copy it "
                             "here first (sftdata.audit_data and sftdata verify check it where it is)")
        location = local_path_of(location)
    manifest = load_manifest(location)
    report = None
    if verify:
        report = verify_folder(location, manifest=manifest)
        if not report.ok:
            shown = "; ".join(f"{p.kind} {p.file}: {p.message}" for p in report.problems[:3])
            more = f" (and {len(report.problems) - 3} more)" if len(report.problems) > 3 else ""
            raise FolderNotVerified(f"{location}: the shards do not match the manifest: {shown}{more}", report)
    from pathlib import Path

    return Prepared(load_shards(Path(location)), manifest, report)


@dataclass
class Validation:
    """What ``sftdata validate`` found: ``invalid`` lists the first ``max_listed`` invalid records."""

    records: int = 0
    invalid: list[Checked] = field(default_factory=list)
    invalid_total: int = 0
    reasons: Counter = field(default_factory=Counter)
    unknown_keys: dict[str, int] = field(default_factory=dict)  # records per key name no stage reads
    hints: list[str] = field(default_factory=list)  # what would read records of another shape

    @property
    def ok(self) -> bool:
        return self.invalid_total == 0


def validate(paths: str | Sequence[str], *, pipeline: Pipeline = None, max_listed: int = 1000,
             on_invalid: Callable[[Checked], None] | None = None, **options: Unpack[Options]) -> Validation:
    """``sftdata validate``: schema and semantic checks of every record, no tokenizer. ``on_invalid``
    is called with each of the first ``max_listed`` invalid records as they are found."""
    from sftdata.process.validation import validate_files
    from sftdata.stages.read.jsonl import expand_inputs
    from sftdata.summary import validate_hints

    settings = pipeline_settings(pipeline, **options)
    names = [paths] if isinstance(paths, str) else list(paths)
    files = expand_inputs(names)
    out, formats = Validation(), {}
    for checked in validate_files(names, settings, formats):
        out.records += 1
        if checked.ok:
            for key in checked.unknown_keys:
                out.unknown_keys[key] = out.unknown_keys.get(key, 0) + 1
            continue
        out.invalid_total += 1
        out.reasons[checked.rejection.reason] += 1
        if out.invalid_total <= max_listed:
            out.invalid.append(checked)
            if on_invalid is not None:
                on_invalid(checked)
    out.hints = validate_hints([p.resolve() for p in files], settings, formats, set(out.reasons))
    return out


__all__ = ["EncodedRow", "FolderNotVerified", "Options", "Prepared", "RecordRejected", "Validation", "audit_data",
           "encode", "load", "pipeline_settings", "run", "validate"]
