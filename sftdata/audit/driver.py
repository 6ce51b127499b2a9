"""The one audit driver, over a small source protocol: a prepared folder or another tool's parts.

Why one driver: the two kinds of input differ in what they can tell (a manifest with counts, a
tokenizer fingerprint and truncated ids; or parts whose columns and labels convention must be
found), not in how a report is made. The driver loads the tokenizer, runs the source's row pass
into one `Violations` sink, lets the source add what only it can check, and builds the report
with one set of statuses, statistics and timings; a source answers the few questions below.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from sftdata.audit.report import AuditReport, RowStats, Violations
from sftdata.audit.slice_view import RuleContext


@dataclass
class RowPass:
    """What a source's row pass found, besides its violations."""

    total: RowStats = field(default_factory=RowStats)
    packed: bool = False
    samples: list[dict] = field(default_factory=list)
    all_read: bool = True  # every shard or part could be checked
    seconds: float = 0.0
    parts: int = 0  # shards or parts

    def first_rows(self, name: str, rows: int) -> None:
        """The first three rows of the data, for the HTML page's samples."""
        wanted = max(0, 3 - len(self.samples))
        self.samples += [{"shard": name, "row": r, "why": "first rows"} for r in range(min(wanted, rows))]


class Source(Protocol):
    """What the driver asks of an input: where it is, its tokenizer, its rows, its extra checks."""

    path: str  # shown in the report
    location: str  # as given, for the HTML page to read its sample rows
    spec: str  # the tokenizer spec

    def context(self, tok: Any, sink: Violations) -> RuleContext:
        """The rule context (and any check of the tokenizer itself, into ``sink``)."""

    def row_pass(self, tok: Any, ctx: RuleContext, sink: Violations) -> RowPass:
        """Every row rule over every row."""

    def thresholds(self) -> dict[str, float | None]:
        """min_trained_fraction and max_rejected_fraction, None where not set."""

    def stats(self, rows: RowPass) -> dict:
        """The report's statistics."""

    def after_rows(self, tok: Any, sink: Violations, rows: RowPass, stats: dict,
                   thresholds: dict[str, float | None]) -> None:
        """Checks over the whole input: counts, thresholds, ``--source``."""

    def skip(self, rows: RowPass, thresholds: dict[str, float | None]) -> dict[str, str]:
        """Rules not checked for this input, with the reason."""

    def fields(self, tok: Any) -> dict[str, Any]:
        """The report's source-specific fields (integrity, tokenizer, input, row_reader, rules)."""


def drive(source: Source, max_per_rule: int) -> AuditReport:
    """Audit ``source``: the row pass, the source's own checks, and the report."""
    from sftdata.audit.findings import audit_tokenizer, finish_report

    started = time.perf_counter()
    tok = audit_tokenizer(source.spec)
    sink = Violations(max_per_rule)
    ctx = source.context(tok, sink)
    rows_started = time.perf_counter()
    rows = source.row_pass(tok, ctx, sink)
    rows.seconds = time.perf_counter() - rows_started
    thresholds = source.thresholds()
    stats = source.stats(rows)
    source.after_rows(tok, sink, rows, stats, thresholds)
    return finish_report(path=source.path, location=source.location, sink=sink, total=rows.total, stats=stats,
                         skip=source.skip(rows, thresholds), samples=rows.samples, thresholds=thresholds, ctx=ctx,
                         started=started, rows_seconds=rows.seconds, **source.fields(tok))
