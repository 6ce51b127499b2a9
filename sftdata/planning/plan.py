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

from sftdata.planning.folder import load_shards, read_manifest
from sftdata.planning.memory import format_bytes
from sftdata.planning.sizing import BatchDecision
from sftdata.planning.token_batches import BatchSpec, dataset_lengths, epoch_plan, padded_width

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


def length_histogram(lengths: Sequence[int] | np.ndarray) -> list[tuple[int, int, int]]:
    """Rows per power-of-two length bin: 1-64, 65-128, 129-256, ..."""
    lens = np.asarray(lengths, dtype=np.int64)
    top, edges = int(lens.max()), [0, 64]
    while edges[-1] < top:
        edges.append(edges[-1] * 2)
    counts = np.histogram(lens, bins=np.array(edges) + 0.5)[0]
    return [(lo + 1, hi, int(n)) for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)]


def size_figures(lengths: Sequence[int] | np.ndarray, spec: BatchSpec, grad_accum: int, world_size: int,
                 seed: int) -> SizeFigures:
    """Cut one epoch with the training sampler and measure it."""
    ep = epoch_plan(lengths, spec, seed, 0, world_size)
    batches, real, batched = len(ep.starts), int(ep.real.sum()), int(ep.batched.sum())
    unit, size = ("tokens", spec.tokens) if spec.tokens else ("rows", spec.rows)
    mean_real = real / batches
    return SizeFigures(unit, int(size or 0), batches // world_size, 1 - real / batched, len(ep.order) / batches,
                       mean_real, int(ep.batched.max()), mean_real * grad_accum * world_size)


def make_plan(folder: Path, *, batch_sizes: Sequence[int] | None = None, batch_tokens: Sequence[int] | None = None,
              padding_free: bool | None = None, pad_to_multiple_of: int | None = None, grad_accum: int = 1,
              world_size: int = 1, seed: int = 42, top: int = 5) -> Plan:
    """The plan for ``folder``; sizes default to 1..32 rows and 1..16 times the longest row in tokens."""
    read_manifest(Path(folder))
    ds = load_shards(Path(folder))
    lengths = dataset_lengths(ds)
    packed = bool({"position_ids", "seq_lengths"} & set(ds.column_names))
    free = packed if padding_free is None else (padding_free or packed)
    longest = padded_width(int(lengths.max()), pad_to_multiple_of)
    notes = ["packed shards: batches are padding-free"] if packed else []
    rows = [n for n in (batch_sizes or DEFAULT_ROWS) if batch_sizes or n <= len(lengths)]
    budgets = list(batch_tokens or [longest * m for m in TOKEN_MULTIPLES])
    too_small = [n for n in budgets if n < longest]
    if too_small:
        notes.append(f"token budget(s) {', '.join(map(str, too_small))} are below the longest row ({longest} tokens "
                     "as batched): `sftdata train` refuses them")
    sizes = [size_figures(lengths, BatchSpec(rows=n, padding_free=free, pad_to_multiple_of=pad_to_multiple_of),
                          grad_accum, world_size, seed) for n in rows]
    sizes += [size_figures(lengths, BatchSpec(tokens=n, padding_free=free, pad_to_multiple_of=pad_to_multiple_of),
                           grad_accum, world_size, seed) for n in budgets if n >= longest]
    order = np.lexsort((np.arange(len(lengths)), -lengths))[:top].tolist()
    ids = ds.data.column("id").take(order).to_pylist() if "id" in ds.column_names else None
    return Plan(str(folder), len(lengths), int(lengths.sum()), free, grad_accum, world_size, length_histogram(lengths),
                [(str(ids[k]) if ids else f"index {i}", int(lengths[i])) for k, i in enumerate(order)], sizes, None, notes)


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
