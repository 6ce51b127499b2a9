"""``sftdata plan DIR``: how a prepared folder will batch, read from the folder alone.

Why: batch sizing decisions (rows or a token budget, how much padding, how many steps, whether
the worst case fits) are usually made by renting a GPU and watching it fail. The shards' lengths
answer most of it before then: the length histogram, and for each candidate size the padding
waste, micro-batches per epoch and tokens per optimizer step, computed by cutting the epoch with
the very sampler ``sftdata train`` uses; the longest rows, which decide the worst case; and, given
a model and a device, the worst-case memory probe of ``--batch-size auto`` as a size -> peak table.

:func:`plan_figures` returns the same figures as plain data, for reports (the HTML audit chart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sftdata.planning.figures import EpochTotals, epoch_totals, shuffled
from sftdata.planning.folder import check_dataset_files, read_manifest
from sftdata.planning.lengths import read_lengths
from sftdata.planning.memory import format_bytes
from sftdata.planning.sizing import BatchDecision
from sftdata.planning.token_batches import BatchSpec, _rng, padded_width

DEFAULT_ROWS = (1, 2, 4, 8, 16, 32)
TOKEN_MULTIPLES = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class SizeFigures:
    """One candidate size over one epoch (micro-batches per process; tokens per optimizer step)."""

    unit: str
    size: int
    micro_batches: int
    padding_waste: float  # share of the batched positions that are padding
    rows_per_micro_batch: float
    tokens_per_micro_batch: float  # real tokens, mean
    max_batched_tokens: int  # the largest micro-batch as the collator builds it
    tokens_per_step: float  # real tokens per optimizer step (all processes, accumulation), mean


@dataclass(frozen=True)
class Plan:
    folder: str
    rows: int
    tokens: int
    padding_free: bool
    grad_accum: int
    world_size: int
    histogram: list[tuple[int, int, int]]  # (from, to inclusive, rows)
    longest: list[tuple[str, int]]  # (id, tokens), longest first
    sizes: list[SizeFigures]
    probe: BatchDecision | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["probe"] = None if self.probe is None else self.probe.to_dict()
        return out


_HISTOGRAM_BLOCK = 1 << 18  # rows per bincount (its int64 copy: 2 MiB)


def length_histogram(lengths: Sequence[int] | np.ndarray) -> list[tuple[int, int, int]]:
    """Rows per power-of-two length bin: 1-64, 65-128, 129-256, ..."""
    lens = np.asarray(lengths)
    if lens.dtype.kind in "iu" and lens.size and 0 <= lens.min() and lens.max() < 1 << 20:
        counts = np.zeros(int(lens.max()) + 1, dtype=np.int64)  # rows per length, a block at a time:
        for i in range(0, lens.size, _HISTOGRAM_BLOCK):  # bincount copies its input as int64
            block = np.bincount(lens[i:i + _HISTOGRAM_BLOCK])
            counts[:block.size] += block
        values = np.flatnonzero(counts)
        counts = counts[values]
    else:
        values, counts = np.unique(lens.astype(np.int64), return_counts=True)
    top, edges = int(values.max()), [0, 64]
    while edges[-1] < top:
        edges.append(edges[-1] * 2)
    binned = np.histogram(values, bins=np.array(edges) + 0.5, weights=counts)[0]
    return [(lo + 1, hi, int(n)) for lo, hi, n in zip(edges[:-1], edges[1:], binned, strict=True)]


def size_figures(lengths: Sequence[int] | np.ndarray, spec: BatchSpec, grad_accum: int, world_size: int,
                 seed: int) -> SizeFigures:
    """Cut one epoch with the training sampler and measure it."""
    lens = np.asarray(lengths)
    arranged = shuffled(lens, seed) if spec.rows is not None else np.sort(lens)[::-1]
    return _figures(epoch_totals(arranged, spec, world_size), spec, grad_accum, world_size)


def _figures(ep: EpochTotals, spec: BatchSpec, grad_accum: int, world_size: int) -> SizeFigures:
    unit, size = ("tokens", spec.tokens) if spec.tokens else ("rows", spec.rows)
    mean_real = ep.real / ep.batches
    return SizeFigures(unit, int(size or 0), ep.batches // world_size, 1 - ep.real / ep.batched,
                       ep.rows / ep.batches, mean_real, ep.max_batched, mean_real * grad_accum * world_size)


def _all_sizes(lengths: np.ndarray, rows: list[int], budgets: list[int], free: bool, multiple: int | None,
               grad_accum: int, world_size: int, seed: int) -> list[SizeFigures]:
    """The figures of every size, rows first then budgets, with one arranged copy of the lengths at
    a time: sorted longest first for the budgets, then ``lengths`` itself shuffled in place."""
    specs = [BatchSpec(tokens=n, padding_free=free, pad_to_multiple_of=multiple) for n in budgets]
    ordered = np.sort(lengths)[::-1] if specs else lengths
    by_tokens = [_figures(epoch_totals(ordered, s, world_size), s, grad_accum, world_size) for s in specs]
    del ordered
    _rng(seed, 0).shuffle(lengths)  # the rows as every row-count epoch_plan of this seed orders them
    specs = [BatchSpec(rows=n, padding_free=free, pad_to_multiple_of=multiple) for n in rows]
    return [_figures(epoch_totals(lengths, s, world_size), s, grad_accum, world_size) for s in specs] + by_tokens


def make_plan(folder: Path, *, batch_sizes: Sequence[int] | None = None, batch_tokens: Sequence[int] | None = None,
              padding_free: bool | None = None, pad_to_multiple_of: int | None = None, grad_accum: int = 1,
              world_size: int = 1, seed: int = 42, top: int = 5) -> Plan:
    """The plan for ``folder``; sizes default to 1..32 rows and 1..16 times the longest row in tokens.
    The shards are read one at a time (only their row lengths: `sftdata.planning.lengths`) and the
    figures computed without the epoch's per-row arrays (`sftdata.planning.figures`)."""
    read_manifest(Path(folder))
    found = read_lengths(Path(folder), check_dataset_files(Path(folder)), top)
    lengths = found.lengths
    packed = bool({"position_ids", "seq_lengths"} & set(found.columns))
    free = packed if padding_free is None else (padding_free or packed)
    longest = padded_width(int(lengths.max()), pad_to_multiple_of)
    notes = ["packed shards: batches are padding-free"] if packed else []
    rows = [n for n in (batch_sizes or DEFAULT_ROWS) if batch_sizes or n <= len(lengths)]
    budgets = list(batch_tokens or [longest * m for m in TOKEN_MULTIPLES])
    too_small = [n for n in budgets if n < longest]
    if too_small:
        notes.append(f"token budget(s) {', '.join(map(str, too_small))} are below the longest row ({longest} tokens "
                     "as batched): `sftdata train` refuses them")
    n_rows, tokens, histogram = len(lengths), int(lengths.sum(dtype=np.int64)), length_histogram(lengths)
    sizes = _all_sizes(lengths, rows, [n for n in budgets if n >= longest], free, pad_to_multiple_of, grad_accum,
                       world_size, seed)
    return Plan(str(folder), n_rows, tokens, free, grad_accum, world_size, histogram, found.longest, sizes, None,
                notes)


def plan_figures(folder: Path) -> dict[str, Any]:
    """The default plan of ``folder`` as JSON-ready data: histogram, per-size figures, longest rows."""
    return make_plan(Path(folder)).to_dict()


def render_text(plan: Plan, width: int = 40) -> str:
    """The plan as a terminal report."""
    kind = "padding-free" if plan.padding_free else "padded"
    lines = [f"{plan.folder}: {plan.rows:,} rows, {plan.tokens:,} tokens; {kind} batches, "
             f"{plan.world_size} process(es), accumulation {plan.grad_accum}", "", "row lengths (tokens)"]
    most = max(c for _, _, c in plan.histogram) or 1
    for lo, hi, count in plan.histogram:
        bar = "#" * max(1 if count else 0, round(width * count / most))
        lines.append(f"  {lo:>7,}-{hi:<7,} {count:>8,}  {bar}")
    lines += ["", "longest rows (they decide the worst case): "
              + ", ".join(f"{rid} ({n:,})" for rid, n in plan.longest), ""]
    head = (f"  {'micro-batch':<22}{'per epoch':>10}{'padding':>9}{'rows/mb':>9}{'tokens/mb':>11}"
            f"{'max batched':>13}{'tokens/step':>13}")
    lines += ["per process and epoch (micro-batches), real tokens per optimizer step", head]
    for f in plan.sizes:
        flag = "--batch-size" if f.unit == "rows" else "--batch-tokens"
        lines.append(f"  {flag + ' ' + str(f.size):<22}{f.micro_batches:>10,}{f.padding_waste:>9.1%}"
                     f"{f.rows_per_micro_batch:>9.1f}{f.tokens_per_micro_batch:>11,.0f}{f.max_batched_tokens:>13,}"
                     f"{f.tokens_per_step:>13,.0f}")
    if plan.probe is not None:
        p = plan.probe
        lines += ["", f"worst-case probe on {p.device}: memory {format_bytes(p.memory_total)}, a trial must stay "
                      f"under {format_bytes(p.memory_limit)}", f"  {p.unit:>10}  {'peak':>12}  verdict"]
        lines += [f"  {t.size:>10,}  {format_bytes(t.peak):>12}  {t.note}" for t in sorted(p.trials, key=lambda t: t.size)]
        lines.append(f"  largest that fits: {p.largest_fit:,} {p.unit}")
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
