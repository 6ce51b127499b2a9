"""The audit's row pass over a prepared folder's shards, on this process or on several.

Why processes: the rule checks are numpy over each shard, but between the numpy calls it is
Python, so threads do not overlap them. On a 16-copy output (64 shards, 9.1 M tokens), in-process
and warm, the row pass took 0.36-0.39 s of a 0.51-0.54 s ``run_audit`` on one process and
0.30-0.31 s of 0.36 s on two (the idle parent hashes the files meanwhile). Each shard is checked into a ``Violations`` and a date table of
its own (``ShardOutcome``), and the outcomes are merged in manifest order with the caps applied
as if one sink had seen every shard in turn: the first ``max_per_rule`` items of a rule over the
whole folder are the first ones of the shards in order, so the report is the same for any number
of processes (``tests/audit/test_audit_parallel.py`` compares them byte for byte).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from sftdata.audit.arrays import column_problems, iter_slices
from sftdata.audit.integrity import AuditError, map_shard
from sftdata.audit.report import RowStats, Violations
from sftdata.audit.rules import check_slice
from sftdata.audit.slice_view import RuleContext
from sftdata.storage import Folder
from sftdata.storage.opener import release_arrow_memory, release_pages

MAX_WORKERS = 8


@dataclass
class ShardOutcome:
    """What checking one shard found: its violations, its system-header dates, its stats."""

    name: str
    sink: Violations
    stats: RowStats | None = None  # None: unreadable, or columns that cannot be checked
    packed: bool = False
    # what the shard added to a worker's copy of ctx.dates; None: checked with the folder's own ctx
    dates: dict[tuple, list] | None = None


def count_check(sink: Violations, what: str, want: dict, found: dict, shard: str | None) -> None:
    diffs = [f"{k} {found[k]} (manifest says {want.get(k)})" for k in found if want.get(k) != found[k]]
    if diffs:
        sink.add("manifest_counts", f"{what}: " + "; ".join(diffs), shard=shard)


def check_table(table: pa.Table, name: str, ctx: RuleContext, sink: Violations, prepared: bool = True,
                first_row: int = 0, whole: bool = True,
                after_slice: Callable[[], None] | None = None) -> tuple[RowStats, bool] | None:
    """Every row rule over one shard or part; None when its columns cannot be checked at all.
    Data without a manifest (``prepared=False``) is not expected to carry sftdata's content_hash.
    ``first_row``: the table's first row within its part; ``whole=False``: the table is one slice
    of its part, so the caller judges whether the part trains anything. ``after_slice`` runs once
    each slice is checked (a mapped shard lets go of the pages read)."""
    problems, fatal, packed = column_problems(table.schema)
    for message in problems if prepared else [p for p in problems if p != "no column content_hash"]:
        sink.add("columns", message, shard=name)
    if fatal:
        return None
    shard = RowStats()
    for first, cols in iter_slices(table, packed):
        shard.merge(check_slice(cols, first_row + first, name, ctx, sink, packed))
        del cols
        if after_slice is not None:
            after_slice()
    if whole and shard.rows and not shard.trained_tokens:
        sink.add("all_labels_masked", f"not one of the {shard.rows} rows trains a token: every label is -100 "
                 "(a response template that never matched?)", shard=name)
    return shard, packed


def check_shard(folder: Folder, entry: dict, ctx: RuleContext, max_per_rule: int,
                check_integrity: bool) -> ShardOutcome:
    """Every row rule over the shard ``entry`` names, and its counts against the manifest's."""
    name = entry["file"]
    out = ShardOutcome(name, Violations(max_per_rule))
    try:
        table, mapped = map_shard(folder, name)
    except (OSError, pa.ArrowException) as exc:
        if not check_integrity:  # otherwise the integrity check reports it
            out.sink.add("shard_integrity", f"unreadable: {exc}", shard=name)
        return out

    def after_slice() -> None:
        release_pages(mapped)
        release_arrow_memory()

    checked = check_table(table, name, ctx, out.sink, after_slice=after_slice)
    del table
    release_pages(mapped)
    release_arrow_memory()
    if checked is not None:
        out.stats, out.packed = checked
        count_check(out.sink, f"shard {name}", entry, {"rows": out.stats.rows, "tokens": out.stats.tokens,
                                                       "trained_tokens": out.stats.trained_tokens}, name)
    return out


def merge_outcome(sink: Violations, ctx: RuleContext, outcome: ShardOutcome) -> None:
    """Add one shard's findings to the folder's, as if they had been found into ``sink`` itself."""
    sink.extend(outcome.sink)
    if outcome.dates is None:
        return
    for key, (count, listed) in outcome.dates.items():
        entry = ctx.dates.setdefault(key, [0, []])
        entry[0] += count
        entry[1] += listed[:max(0, sink.max_per_rule - len(entry[1]))]


def audit_workers(folder: Folder, shards: int, workers: int | None) -> int:
    """Processes for the row pass: ``workers``, else one per CPU this process may use (at most
    ``MAX_WORKERS``); 1 for a remote folder (its filesystem client must not cross a fork) or
    where processes cannot fork."""
    if folder.remote or shards < 2 or "fork" not in mp.get_all_start_methods():
        return 1
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(workers, shards, MAX_WORKERS))


_JOB: list[Any] = []  # (folder, entries, ctx, max_per_rule, check_integrity), set before the fork


def _check_index(i: int) -> ShardOutcome:
    folder, entries, ctx, max_per_rule, check_integrity = _JOB[0]
    # ctx.dates caps the conversations it lists per header. What this shard adds to the worker's
    # copy travels back; that copy has seen fewer shards than the folder's, so it lists at least
    # as many as the folder's would, and the merge cuts them to the same first ones.
    before = {key: (count, len(listed)) for key, (count, listed) in ctx.dates.items()}
    out = check_shard(folder, entries[i], ctx, max_per_rule, check_integrity)
    out.dates = {}
    for key, (count, listed) in ctx.dates.items():
        n, k = before.get(key, (0, 0))
        if count != n:
            out.dates[key] = [count - n, listed[k:]]
    return out


def check_shards(folder: Folder, entries: list[dict], ctx: RuleContext, max_per_rule: int, check_integrity: bool,
                 workers: int = 1, started: Callable[[], None] | None = None) -> Iterator[ShardOutcome]:
    """Each shard's outcome, in manifest order. ``started`` runs once the worker processes exist
    (the caller's thread work goes there: threads must not be running when a process forks)."""
    if workers <= 1:
        if started:
            started()
        for entry in entries:
            yield check_shard(folder, entry, ctx, max_per_rule, check_integrity)
        return
    # The first shard is checked here, before the fork: it fills what every shard needs and the
    # first check builds (the role names' decoding loads the tokenizer, 0.1 s), once for all.
    first = check_shard(folder, entries[0], ctx, max_per_rule, check_integrity)
    _JOB[:] = [(folder, entries, ctx, max_per_rule, check_integrity)]
    rest = range(1, len(entries))
    pool = ProcessPoolExecutor(min(workers, len(rest)), mp_context=mp.get_context("fork"))
    try:
        results = pool.map(_check_index, rest, chunksize=max(1, len(rest) // (4 * workers)))
        if started:
            started()
        yield first
        yield from results
    except BrokenProcessPool:
        raise AuditError("a process of the audit's row pass died (killed by a signal or out of memory); "
                         "rerun with --workers 1") from None
    finally:
        pool.shutdown(cancel_futures=True)
        _JOB.clear()
