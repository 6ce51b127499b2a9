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

from .checks import load_shards, read_manifest
from .memory import format_bytes
from .sizing import BatchDecision
from .token_batches import BatchSpec, dataset_ids, dataset_lengths, epoch_batches, padded_width

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


def length_histogram(lengths: Sequence[int]) -> list[tuple[int, int, int]]:
    """Rows per power-of-two length bin: 1-64, 65-128, 129-256, ..."""
    top, edges = max(lengths), [0, 64]
    while edges[-1] < top:
        edges.append(edges[-1] * 2)
    return [(lo + 1, hi, sum(lo < n <= hi for n in lengths)) for lo, hi in zip(edges, edges[1:], strict=False)]


def size_figures(lengths: Sequence[int], spec: BatchSpec, grad_accum: int, world_size: int,
                 seed: int) -> SizeFigures:
    """Cut one epoch with the training sampler and measure it."""
    batches = epoch_batches(lengths, spec, seed, 0, world_size)
    real = [sum(lengths[i] for i in b) for b in batches]
    batched = [spec.size_of([lengths[i] for i in b]) for b in batches]
    unit, size = ("tokens", spec.tokens) if spec.tokens else ("rows", spec.rows)
    per_rank = len(batches) // world_size
    mean_real = sum(real) / len(batches)
    return SizeFigures(unit, int(size or 0), per_rank, 1 - sum(real) / sum(batched), len(lengths) / len(batches),
                       mean_real, max(batched), mean_real * grad_accum * world_size)


def make_plan(folder: Path, *, batch_sizes: Sequence[int] | None = None, batch_tokens: Sequence[int] | None = None,
              padding_free: bool | None = None, pad_to_multiple_of: int | None = None, grad_accum: int = 1,
              world_size: int = 1, seed: int = 42, top: int = 5) -> Plan:
    """The plan for ``folder``; sizes default to 1..32 rows and 1..16 times the longest row in tokens."""
    read_manifest(Path(folder))
    ds = load_shards(Path(folder))
    lengths, ids = dataset_lengths(ds), dataset_ids(ds)
    packed = bool({"position_ids", "seq_lengths"} & set(ds.column_names))
    free = packed if padding_free is None else (padding_free or packed)
    longest = padded_width(max(lengths), pad_to_multiple_of)
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
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))[:top]
    return Plan(str(folder), len(lengths), sum(lengths), free, grad_accum, world_size, length_histogram(lengths),
                [(ids[i] if ids else f"index {i}", lengths[i]) for i in order], sizes, None, notes)


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


def probe_plan(plan: Plan, model_spec: str, device: str, *, unit: str = "rows", memory_limit: int | None = None,
               margin: float = 0.10, bf16: bool = False, pad_to_multiple_of: int | None = None,
               seed: int = 42) -> Plan:
    """``plan`` with the worst-case probe of ``model_spec`` on ``device`` run once (no cap on the size)."""
    import tempfile

    import torch

    from .checks import check_vocabulary, token_id_range
    from .collator import ShardCollator
    from .model_check import check_model_folder
    from .settings import TrainError, build_sft_config, resolve_settings
    from .settings import TrainOptions as Opts
    from .sizing import longest_rows, probe_decision
    from .tiny_model import load_model, model_vocab_size
    from .token_batches import dataset_lengths as lengths_of

    folder = Path(plan.folder)
    manifest, ds = read_manifest(folder), load_shards(folder)
    pad_id = (manifest.get("tokenizer") or {}).get("pad_id")
    if pad_id is None:
        raise TrainError(f"{folder}/manifest.json names no pad id; the probe needs one to batch rows")
    check_model_folder(model_spec)  # before anything is built: a hostile or oversized config, pickled weights
    try:
        vocab = model_vocab_size(model_spec)
    except (OSError, ValueError) as exc:  # a missing or malformed model
        raise TrainError(f"cannot load the model {model_spec!r}: {' '.join(str(exc).split())[:300]}") from None
    check_vocabulary(vocab, token_id_range(ds, "input_ids"), token_id_range(ds, "labels"), pad_id, model_spec)
    with tempfile.TemporaryDirectory() as tmp:
        settings, _ = resolve_settings(Opts(data_dir=folder, model=model_spec, output_dir=Path(tmp), bf16=bf16,
                                            overrides=[f"use_cpu={str(device == 'cpu').lower()}"]))
        args = build_sft_config(settings)
    try:
        model = load_model(model_spec, seed, {})
    except (OSError, ValueError) as exc:
        raise TrainError(f"cannot load the model {model_spec!r}: {exc}") from exc
    lengths = lengths_of(ds)
    collator = ShardCollator(pad_id, plan.padding_free, pad_to_multiple_of)
    from .probe import search_space

    space = search_space(unit, lengths, plan.padding_free, pad_to_multiple_of)
    rows = longest_rows(ds, lengths, unit, plan.padding_free, space.k_max, space.size(space.k_max))
    decision = probe_decision(unit, model, args, lengths, rows, collator, requested=None, grad_accum=None,
                              memory_limit=memory_limit, margin=margin, device=torch.device(device))
    del model
    return Plan(**{**plan.__dict__, "probe": decision})
