"""A prepared folder as an audit source: its manifest says how it was made, its shards hold the rows.

Why its own source: only a manifest can feed the checks of integrity (size and sha256 of every
shard), counts (rows, tokens and trained tokens per shard and in total, records read versus
written and rejected) and the tokenizer fingerprint, and only a local folder's shards can be
checked on several processes. Everything else is the driver's (`sftdata.audit.driver`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sftdata.audit.driver import RowPass
from sftdata.audit.integrity import AuditError, IntegrityReport, load_manifest, open_output, verify_folder
from sftdata.audit.mixture import mixture_of
from sftdata.audit.report import Violations
from sftdata.audit.shards import audit_workers, check_shards, count_check, merge_outcome
from sftdata.audit.slice_view import RuleContext
from sftdata.storage import Folder


def _integrity(folder: Folder, manifest: dict) -> IntegrityReport | BaseException:
    try:
        return verify_folder(folder, counts=False, manifest=manifest)
    except BaseException as exc:  # noqa: BLE001 - raised again in the auditing thread
        return exc


def _plain_rows_allowed(pipeline: dict) -> bool:
    """Rows with no chat structure (BOS + text) are legitimate only where the pipeline makes them:
    `text` records under ``text_without_chat: train_all`` and string prompt/completion records."""
    fmt = pipeline.get("input_format")
    return (fmt == "text" and pipeline.get("text_without_chat") == "train_all") or fmt == "prompt_completion"


class PreparedSource:
    """A finished ``sftdata run`` output folder, local or remote."""

    def __init__(self, path: str | Path | Folder, *, thresholds: dict[str, float | None], check_integrity: bool,
                 sources: Sequence[str | Path] | None, max_per_rule: int, workers: int | None) -> None:
        self.folder = open_output(path)
        self.manifest = load_manifest(self.folder)
        spec = (self.manifest.get("tokenizer") or {}).get("spec")
        if not isinstance(spec, str) or not spec:
            raise AuditError(f"{self.folder}: the manifest names no tokenizer (tokenizer.spec)")
        self.path, self.location, self.spec = str(self.folder), self.folder.location, spec
        self.pipeline = self.manifest.get("pipeline") or {}
        max_length = self.pipeline.get("max_length")
        self.max_length = max_length if isinstance(max_length, int) else None
        self.given, self.check_integrity, self.sources = thresholds, check_integrity, sources
        self.max_per_rule, self.workers = max_per_rule, workers
        self.integrity: IntegrityReport | None = None

    def context(self, tok: Any, sink: Violations) -> RuleContext:
        from sftdata.audit.findings import check_tokenizer, rule_context

        check_tokenizer(self.manifest, tok, list(tok.header_newline_ids), sink)
        return rule_context(tok, truncated_ids=self._truncated_ids(sink), max_length=self.max_length,
                            allow_plain=_plain_rows_allowed(self.pipeline))

    def _truncated_ids(self, sink: Violations) -> frozenset[str]:
        """The rows allowed to end mid-turn: ``truncated_ids.jsonl`` (inline in a version 1 manifest),
        streamed and checked against the manifest. One that is missing or altered allows none, and is
        reported here unless the integrity check (which names it too) runs."""
        from sftdata.sidecars import SidecarError, list_ids
        from sftdata.storage.layout import TRUNCATED_NAME

        try:
            return list_ids(self.folder, self.manifest, TRUNCATED_NAME)
        except SidecarError as exc:
            if not self.check_integrity:
                sink.add("shard_integrity", f"{exc}; no row may end mid-turn", shard=TRUNCATED_NAME)
            return frozenset()

    def row_pass(self, tok: Any, ctx: RuleContext, sink: Violations) -> RowPass:
        folder, manifest, entries = self.folder, self.manifest, self.manifest["shards"]
        n_workers = audit_workers(folder, len(entries), self.workers)
        # With worker processes the integrity check (SHA-256 of every file: hashlib and file reads let
        # go of the GIL) runs on a thread of this idle process meanwhile; alone it would only contend
        # with the row pass for the GIL. Its findings come first in the report either way.
        box: list[Any] = []
        thread = threading.Thread(target=lambda: box.append(_integrity(folder, manifest)), name="sftdata-integrity",
                                  daemon=True) if self.check_integrity else None
        if thread is not None and n_workers == 1:
            thread.run()  # here, before the rows, as a plain call
        # Each shard's statistics are merged as it comes (a fixed-size summary); its findings wait
        # for the integrity check's, which come first in the report.
        rows = RowPass(parts=len(entries))
        outcomes, checked = [], []
        for outcome in check_shards(folder, entries, ctx, self.max_per_rule, self.check_integrity, n_workers,
                                    started=thread.start if thread and n_workers > 1 else None):
            if outcome.stats is not None:
                rows.packed |= outcome.packed
                rows.first_rows(outcome.name, outcome.stats.rows)
                rows.total.merge(outcome.stats)
            checked.append(outcome.stats is not None)
            outcome.stats = None
            outcomes.append(outcome)
        if thread is not None:
            if n_workers > 1:
                thread.join()
            if isinstance(box[0], BaseException):
                raise box[0]
            self.integrity = box[0]
        for problem in self.integrity.problems if self.integrity else []:
            sink.add("shard_integrity", f"{problem.kind}: {problem.message}", shard=problem.file)
        for outcome in outcomes:
            merge_outcome(sink, ctx, outcome)
        rows.all_read = all(checked)
        return rows

    def thresholds(self) -> dict[str, float | None]:
        from sftdata.audit.findings import THRESHOLDS, number

        settings = self.pipeline.get("audit") if isinstance(self.pipeline.get("audit"), dict) else {}
        return {k: number(self.given[k] if self.given.get(k) is not None else settings.get(k)) for k in THRESHOLDS}

    def stats(self, rows: RowPass) -> dict:
        from sftdata.audit.findings import stats_of

        return stats_of(rows.total, self.manifest, self.max_length, rows.packed, rows.parts)

    def after_rows(self, tok: Any, sink: Violations, rows: RowPass, stats: dict,
                   thresholds: dict[str, float | None]) -> None:
        from sftdata.audit.findings import check_records

        total = rows.total
        if rows.all_read:
            count_check(sink, "totals", self.manifest.get("totals") or {},
                        {"rows": total.rows, "tokens": total.tokens, "trained_tokens": total.trained_tokens}, None)
        if self.sources:
            from sftdata.audit.inspect import compare_sources

            compare_sources(self.folder, self.manifest, [str(s) for s in self.sources], sink, tok)
        check_records(sink, stats, self.manifest.get("counts") or {}, total.conversations if rows.all_read else None,
                       thresholds)

    def skip(self, rows: RowPass, thresholds: dict[str, float | None]) -> dict[str, str]:
        reasons = {"packing": (not rows.packed, "not packed"), "source_match": (not self.sources, "no --source"),
                   "max_length": (self.max_length is None, "no pipeline.max_length"),
                   "shard_integrity": (not self.check_integrity, "--no-integrity"),
                   **{k: (v is None, "no threshold set") for k, v in thresholds.items()}}
        return {r: why for r, (skipped, why) in reasons.items() if skipped}

    def fields(self, tok: Any) -> dict[str, Any]:
        return {"integrity": self.integrity.to_json() if self.integrity else None,
                "tokenizer": {"spec": self.spec, "fingerprint": tok.fingerprint,
                              "manifest_fingerprint": (self.manifest.get("tokenizer") or {}).get("fingerprint")},
                "mixture": mixture_of(self.manifest)}
