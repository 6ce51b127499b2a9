"""The mask audit: prove, from the shard tokens alone, that only assistant answers are trained.

Why it exists: a label mask that is off by one token (a trained header, a shifted label, an
untrained ``<|eot_id|>``) trains a model that looks fine and behaves subtly wrong; nobody notices
until evaluation. The audit re-derives the Llama-3 turn structure from ``input_ids`` for *every*
row (vectorised with numpy, so it costs far less than the tokenization that made the rows), checks
the labels against it, checks the manifest against the shards, and fails loudly.

``run_audit`` is the whole audit; ``verify_folder`` only the manifest-versus-files part.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftdata.constants import MANIFEST_NAME
from sftdata.errors import AuditError
from sftdata.storage import Folder, is_uri, local_path_of

if TYPE_CHECKING:
    import numpy as np

    from sftdata.audit.integrity import IntegrityReport, column_problems, iter_slices, verify_folder
    from sftdata.audit.report import RULES, AuditReport, RowStats, Violations
    from sftdata.audit.rules import RuleContext, check_slice
    from sftdata.audit.shards import check_table

__all__ = ["RULES", "AuditError", "AuditReport", "IntegrityReport", "check_table", "run_audit", "verify_folder", "column_problems", "iter_slices", "check_slice"]
# numpy and pyarrow are imported on first use, not with the package: `sftdata --help` lists the
# audit's commands (sftdata.audit.command) without them
_LAZY = {"RULES": "report", "AuditReport": "report", "IntegrityReport": "integrity", "check_table": "shards",
         "verify_folder": "integrity", "column_problems": "integrity", "iter_slices": "integrity",
         "check_slice": "rules"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


_ROLE_CACHE: dict[str, dict] = {}  # tokenizer fingerprint -> role-token tuple -> role code
THRESHOLDS = ("min_trained_fraction", "max_rejected_fraction")


def _tokenizer(spec: str) -> Any:
    from sftdata.tokenizer import TokenizerError, load_tokenizer  # lru-cached per spec

    try:
        return load_tokenizer(spec)
    except (TokenizerError, OSError, ValueError) as exc:
        raise AuditError(f"cannot load the tokenizer {spec!r}: {exc}") from exc


def _check_tokenizer(manifest: dict, tok: Any, newline: list[int], sink: Violations) -> None:
    """The manifest must describe the tokenizer its spec loads today, id for id."""
    info = manifest.get("tokenizer") or {}
    claims = {"fingerprint": info.get("fingerprint"),
              "fingerprints.tokenizer": (manifest.get("fingerprints") or {}).get("tokenizer")}
    for where, value in claims.items():
        if value is not None and value != tok.fingerprint:
            sink.add("tokenizer_fingerprint", f"manifest {where} {value} but {tok.spec!r} loads as {tok.fingerprint}")
    if claims["fingerprint"] is None:
        sink.add("tokenizer_fingerprint", "manifest has no tokenizer.fingerprint")
    actual = {"bos_id": tok.bos_id, "eot_id": tok.eot_id, "start_header_id": tok.start_header_id,
              "end_header_id": tok.end_header_id, "eom_id": tok.eom_id, "python_tag_id": tok.python_tag_id,
              "pad_id": tok.pad_id, "vocab_size": tok.vocab_size, "header_newline_ids": newline}
    for key, value in actual.items():
        if key in info and info[key] != value:
            sink.add("tokenizer_fingerprint", f"manifest tokenizer.{key} is {info[key]}, the tokenizer says {value}")


def _histogram(values: np.ndarray, lo: float, hi: float, bins: int) -> dict[str, list]:
    import numpy as np

    counts, edges = np.histogram(values, bins=bins, range=(lo, max(hi, lo + 1e-9)))
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}


def _percentile(sorted_values: np.ndarray, q: float) -> float:
    """numpy's default (linear) percentile of sorted values. ``np.percentile`` itself imports
    ``numpy.ma``, 20 ms of a command that takes well under a second."""
    if not sorted_values.size:
        return 0.0
    pos = (sorted_values.size - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, sorted_values.size - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def _stats(total: RowStats, manifest: dict, max_length: int | None, packed: bool, shards: int) -> dict:
    import numpy as np

    from sftdata.audit.report import ROLE_NAMES

    lengths = np.concatenate(total.lengths) if total.lengths else np.zeros(0, np.int64)
    trained = np.concatenate(total.row_trained) if total.row_trained else np.zeros(0, np.int64)
    frac = trained / np.maximum(lengths, 1)
    ordered = np.sort(lengths)
    counts = manifest.get("counts") or {}
    rejected = {str(k): int(v) for k, v in (counts.get("rejected") or {}).items()}
    read = int(counts.get("records_read", counts.get("records_written", total.conversations) + sum(rejected.values())))
    roles = {name: i for i, name in enumerate(ROLE_NAMES)}
    return {
        "shards": shards,
        "rows": total.rows,
        "conversations": total.conversations,
        "tokens": total.tokens,
        "trained_tokens": total.trained_tokens,
        "trained_fraction": total.trained_tokens / total.tokens if total.tokens else 0.0,
        "truncated_rows": total.truncated_rows,
        "packed": packed,
        "max_length": max_length,
        "packing_efficiency": total.tokens / (total.rows * max_length) if max_length and total.rows else None,
        "length": {"min": int(lengths.min(initial=0)) if lengths.size else 0, "max": int(lengths.max(initial=0)),
                   "mean": float(lengths.mean()) if lengths.size else 0.0,
                   "p50": _percentile(ordered, 50), "p95": _percentile(ordered, 95)},
        "length_histogram": _histogram(lengths, 0, float(max(max_length or 0, lengths.max(initial=1))), 32),
        "trained_fraction_histogram": _histogram(frac, 0.0, 1.0, 20),
        "tokens_per_role": {r: int(total.role_tokens[i]) for r, i in roles.items()},
        "trained_tokens_per_role": {r: int(total.role_trained[i]) for r, i in roles.items()},
        "turns_per_role": {r: int(total.role_turns[i]) for r, i in roles.items() if r != "other"},
        "records": {"records_read": read, "records_written": int(counts.get("records_written", total.conversations)),
                    "rejected": rejected, "rejected_total": sum(rejected.values()),
                    "rejected_fraction": sum(rejected.values()) / read if read else 0.0},
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _check_records(sink: Violations, stats: dict, counts: dict, conversations: int | None,
                   thresholds: dict[str, float | None]) -> None:
    """The manifest's record counts add up, and the two thresholds hold."""
    rec = stats["records"]
    if "records_read" in counts and rec["records_read"] != rec["records_written"] + rec["rejected_total"]:
        sink.add("manifest_counts", f"records_read {rec['records_read']} is not records_written "
                 f"{rec['records_written']} + rejected {rec['rejected_total']}")
    if conversations is not None and "records_written" in counts and counts["records_written"] != conversations:
        sink.add("manifest_counts", f"records_written {counts['records_written']} but the shards hold "
                 f"{conversations} conversations")
    low = thresholds["min_trained_fraction"]
    if low is not None and stats["trained_fraction"] < low:
        sink.add("min_trained_fraction", f"trained fraction {stats['trained_fraction']:.4f} is below {low}")
    high = thresholds["max_rejected_fraction"]
    if high is not None and rec["rejected_fraction"] > high:
        sink.add("max_rejected_fraction", f"rejected fraction {rec['rejected_fraction']:.4f} "
                 f"({rec['rejected_total']} of {rec['records_read']}) is above {high}")


def _plain_rows_allowed(pipeline: dict) -> bool:
    """Rows with no chat structure (BOS + text) are legitimate only where the pipeline makes them:
    `text` records under ``text_without_chat: train_all`` and string prompt/completion records."""
    fmt = pipeline.get("input_format")
    return (fmt == "text" and pipeline.get("text_without_chat") == "train_all") or fmt == "prompt_completion"


def rule_context(tok: Any, *, truncated_ids: frozenset[str] = frozenset(), max_length: int | None = None,
                 allow_plain: bool = False) -> RuleContext:
    """The token ids and settings the row rules need, from a loaded tokenizer."""
    from sftdata.audit.rules import RuleContext

    closers = tuple(i for i in (tok.eot_id, tok.eom_id) if i is not None)
    pads = {tok.pad_id, tok.token_id("<|finetune_right_pad_id|>"), tok.token_id("<|end_of_text|>")}
    return RuleContext(bos_id=tok.bos_id, start_header_id=tok.start_header_id, end_header_id=tok.end_header_id,
                       closer_ids=closers, header_newline_ids=tuple(tok.header_newline_ids), vocab_size=tok.vocab_size,
                       decode=tok.decode, truncated_ids=truncated_ids, max_length=max_length,
                       _roles=_ROLE_CACHE.setdefault(tok.fingerprint, {}), allow_plain=allow_plain,
                       pad_ids=frozenset(i for i in pads if i is not None and i not in closers))


def finish_report(*, path: str, location: str, sink: Violations, total: RowStats, stats: dict, skip: dict[str, str],
                  samples: list[dict], thresholds: dict, ctx: RuleContext, started: float, rows_seconds: float,
                  **fields: Any) -> AuditReport:
    """Statuses (fail, skip with its reason, pass), sample rows with violations, timing: the report."""
    from sftdata.audit.pitfalls import finish_dates
    from sftdata.audit.report import RULES, AuditReport

    finish_dates(ctx, sink)
    statuses = {r: "fail" if sink.counts[r] else "skip" if r in skip else "pass" for r in RULES}
    seen = {(s["shard"], s["row"]) for s in samples}
    for v in sink.items:  # and up to three rows with violations
        if v["row"] is not None and (v["shard"], v["row"]) not in seen and len(seen) < len(samples) + 3:
            seen.add((v["shard"], v["row"]))
            samples.append({"shard": v["shard"], "row": v["row"], "why": v["rule"]})
    return AuditReport(
        path=path, location=location, statuses=statuses, violations=sink.items, violation_counts=dict(sink.counts),
        stats=stats, thresholds=thresholds, samples=samples, skip_reasons=skip,
        timing={"seconds": time.perf_counter() - started, "row_check_seconds": rows_seconds,
                "tokens_per_second": total.tokens / rows_seconds if rows_seconds > 0 else 0.0}, **fields)


def _has_manifest(path: str | Path | Folder) -> bool:
    """A prepared folder (or any remote location, which only prepared folders can be)."""
    if isinstance(path, Folder) or is_uri(str(path)) and local_path_of(str(path)) is None:
        return True
    if any(c in str(path) for c in "*?["):
        return False  # a glob of data files
    local = Path(local_path_of(str(path)) or path)
    return (local / MANIFEST_NAME).exists() or not local.exists() or (local.is_dir() and not any(local.iterdir()))


def _integrity(folder: Folder, manifest: dict) -> IntegrityReport | BaseException:
    from sftdata.audit.integrity import verify_folder

    try:
        return verify_folder(folder, counts=False, manifest=manifest)
    except BaseException as exc:  # noqa: BLE001 - raised again in the auditing thread
        return exc


def run_audit(path: str | Path | Folder, *, min_trained_fraction: float | None = None,
              max_rejected_fraction: float | None = None, check_integrity: bool = True,
              sources: Sequence[str | Path] | None = None, max_per_rule: int = 1000,
              labels_column: str | None = None, mask_column: str | None = None, shifted: bool | None = None,
              tokenizer: str | None = None, template: str | None = None, workers: int | None = None) -> AuditReport:
    """Audit a prepared folder, or (no manifest.json) token data that another tool prepared: a
    ``datasets`` folder, Parquet / Arrow / JSON Lines files or a glob (see `sftdata.audit.foreign`).
    Raises `AuditError` when it cannot be audited at all (exit 2); otherwise every finding is in
    the report and ``report.ok`` says whether all rules hold.

    Thresholds left as None are read from the manifest's ``pipeline.audit`` settings, if any.
    ``labels_column``, ``mask_column``, ``shifted``, ``tokenizer`` and ``template`` are for data
    without a manifest (the manifest says all of that for a prepared folder). ``workers``: processes
    for a local folder's row pass (default: one per CPU; the report is the same for any number).
    """
    from sftdata.audit.integrity import load_manifest, open_output
    from sftdata.audit.report import RowStats, Violations
    from sftdata.audit.shards import audit_workers, check_shards, count_check, merge_outcome

    if not _has_manifest(path):
        from sftdata.audit.foreign import audit_foreign

        return audit_foreign(local_path_of(str(path)) or str(path), min_trained_fraction=min_trained_fraction, sources=sources,
                             max_per_rule=max_per_rule, labels_column=labels_column, mask_column=mask_column,
                             shifted=shifted, tokenizer=tokenizer, template=template)
    given = {"--labels-column": labels_column, "--mask-column": mask_column, "--shifted": shifted,
             "--tokenizer": tokenizer, "--template": template}
    if any(v is not None for v in given.values()):
        raise AuditError(f"{', '.join(k for k, v in given.items() if v is not None)}: only for data without a "
                         "manifest (a prepared folder's manifest says how it was made)")
    started = time.perf_counter()
    folder = open_output(path)
    manifest = load_manifest(folder)
    spec = (manifest.get("tokenizer") or {}).get("spec")
    if not isinstance(spec, str) or not spec:
        raise AuditError(f"{folder}: the manifest names no tokenizer (tokenizer.spec)")
    tok = _tokenizer(spec)
    newline = list(tok.header_newline_ids)
    sink = Violations(max_per_rule)
    _check_tokenizer(manifest, tok, newline, sink)
    pipeline = manifest.get("pipeline") or {}
    max_length = pipeline.get("max_length") if isinstance(pipeline.get("max_length"), int) else None
    settings = pipeline.get("audit") if isinstance(pipeline.get("audit"), dict) else {}
    given = {"min_trained_fraction": min_trained_fraction, "max_rejected_fraction": max_rejected_fraction}
    thresholds = {k: _number(given[k] if given[k] is not None else settings.get(k)) for k in THRESHOLDS}
    ctx = rule_context(tok, truncated_ids=frozenset(str(i) for i in manifest.get("truncated_ids") or []),
                       max_length=max_length, allow_plain=_plain_rows_allowed(pipeline))
    entries = manifest["shards"]
    n_workers = audit_workers(folder, len(entries), workers)
    # With worker processes the integrity check (SHA-256 of every file: hashlib and file reads let
    # go of the GIL) runs on a thread of this idle process meanwhile; alone it would only contend
    # with the row pass for the GIL. Its findings come first in the report either way.
    integrity_box: list[Any] = []
    integrity_thread = threading.Thread(target=lambda: integrity_box.append(_integrity(folder, manifest)),
                                        name="sftdata-integrity", daemon=True) if check_integrity else None
    if integrity_thread is not None and n_workers == 1:
        integrity_thread.run()  # here, before the rows, as a plain call
    total, packed_any, all_read, samples = RowStats(), False, True, []
    rows_started = time.perf_counter()
    outcomes = list(check_shards(folder, entries, ctx, max_per_rule, check_integrity, n_workers,
                                 started=integrity_thread.start if integrity_thread and n_workers > 1 else None))
    rows_seconds = time.perf_counter() - rows_started
    integrity = None
    if integrity_thread is not None:
        if n_workers > 1:
            integrity_thread.join()
        integrity = integrity_box[0]
        if isinstance(integrity, BaseException):
            raise integrity
    for problem in integrity.problems if integrity else []:
        sink.add("shard_integrity", f"{problem.kind}: {problem.message}", shard=problem.file)
    for outcome in outcomes:
        merge_outcome(sink, ctx, outcome)
        if outcome.stats is None:
            all_read = False
            continue
        shard = outcome.stats
        packed_any |= outcome.packed
        wanted = max(0, 3 - len(samples))  # the HTML page shows the folder's first three rows
        samples += [{"shard": outcome.name, "row": r, "why": "first rows"} for r in range(min(wanted, shard.rows))]
        total.merge(shard)
    if all_read:
        count_check(sink, "totals", manifest.get("totals") or {},
                     {"rows": total.rows, "tokens": total.tokens, "trained_tokens": total.trained_tokens}, None)
    if sources:
        from sftdata.audit.inspect import compare_sources

        compare_sources(folder, manifest, [str(s) for s in sources], sink, tok)
    stats = _stats(total, manifest, max_length, packed_any, len(manifest["shards"]))
    _check_records(sink, stats, manifest.get("counts") or {}, total.conversations if all_read else None, thresholds)
    reasons = {"packing": (not packed_any, "not packed"), "source_match": (not sources, "no --source"),
               "max_length": (max_length is None, "no pipeline.max_length"),
               "shard_integrity": (not check_integrity, "--no-integrity"),
               **{k: (thresholds[k] is None, "no threshold set") for k in THRESHOLDS}}
    return finish_report(
        path=str(folder), location=folder.location, sink=sink, total=total, stats=stats,
        skip={r: why for r, (skipped, why) in reasons.items() if skipped}, samples=samples, thresholds=thresholds,
        ctx=ctx, started=started, rows_seconds=rows_seconds,
        integrity=integrity.to_json() if integrity else None,
        tokenizer={"spec": spec, "fingerprint": tok.fingerprint,
                   "manifest_fingerprint": (manifest.get("tokenizer") or {}).get("fingerprint")})
