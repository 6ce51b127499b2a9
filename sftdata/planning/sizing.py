"""The batch decision: micro-batch size, gradient accumulation, and what one optimizer step holds.

Why one place: a size alone is half a decision. When ``auto`` picks a micro-batch smaller than the
effective batch asked for (``--global-batch-size`` rows or ``--global-batch-tokens`` per optimizer
step, over all processes), gradient accumulation is raised so that the effective batch holds;
``auto_find_batch_size`` shrinks it silently instead. The decision is printed, and the same
arithmetic serves fixed sizes (``--batch-tokens 8192 --global-batch-tokens 262144``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sftdata.errors import TrainError
from sftdata.planning.collator import ShardCollator
from sftdata.planning.memory import DEFAULT_MARGIN, format_bytes, meter_for
from sftdata.planning.probe import Prober, Trial, agree_across_ranks, search_largest, search_space
from sftdata.planning.token_batches import BatchSpec, padded_width


@dataclass(frozen=True)
class BatchDecision:
    """What training will use; the memory figures are set only when a probe ran."""

    unit: str  # "rows" | "tokens"
    size: int  # rows or tokens per micro-batch, per process
    grad_accum: int
    world_size: int
    requested: int | None  # effective rows/tokens per optimizer step asked for
    device: str | None = None
    memory_total: int | None = None
    memory_limit: int | None = None  # budget less the margin: what a trial's peak had to stay under
    peak: int | None = None  # measured at ``peak_size``: the chosen size, or the largest fit if it was not tried
    peak_size: int | None = None
    largest_fit: int | None = None
    trials: tuple[Trial, ...] = field(default_factory=tuple)
    longest: int | None = None  # the longest row as batched, for the tokens a row-count step can reach

    @property
    def effective(self) -> int:
        return self.size * self.world_size * self.grad_accum

    def spec(self, padding_free: bool, pad_to_multiple_of: int | None) -> BatchSpec:
        key = "rows" if self.unit == "rows" else "tokens"
        return BatchSpec(**{key: self.size}, padding_free=padding_free, pad_to_multiple_of=pad_to_multiple_of)

    def summary(self) -> str:
        per_step = f"{self.effective} {self.unit} per optimizer step"
        if self.unit == "rows" and self.longest:
            per_step += f" (up to {self.effective * self.longest} tokens as batched)"
        if self.unit == "tokens":
            per_step = f"at most {self.effective} tokens per optimizer step (budget; batches are rarely full)"
        asked = "" if self.requested is None else f", {self.requested} asked for"
        head = (f"batch: {self.size} {self.unit} per micro-batch x {self.grad_accum} accumulation x "
                f"{self.world_size} process(es) = {per_step}{asked}")
        if self.device is None:
            return head
        at = f"{self.peak_size} {self.unit}" + ("" if self.peak_size == self.size else " (the chosen size was not tried)")
        return (f"{head}\nbatch probe on {self.device}: memory {format_bytes(self.memory_total)}, peak "
                f"{format_bytes(self.peak)} at {at} (must stay under {format_bytes(self.memory_limit)}); "
                f"largest that fits {self.largest_fit} {self.unit}; {len(self.trials)} trial(s): "
                + ", ".join(f"{t.size}:{format_bytes(t.peak) if t.peak else t.note}" for t in self.trials))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "effective": self.effective, "trials": [asdict(t) for t in self.trials]}


def accumulate(unit: str, fit: int, requested: int | None, world_size: int, grad_accum: int | None,
               quantum: int = 1, smallest: int = 1) -> tuple[int, int]:
    """(size, accumulation) for a micro-batch of at most ``fit`` and an effective batch ``requested``."""
    if requested is None:
        return fit, grad_accum or 1
    if grad_accum is not None:
        raise TrainError("give --grad-accum or a global batch (--global-batch-size/--global-batch-tokens), not both")
    per_rank = -(-requested // world_size)
    accum = max(1, -(-per_rank // fit))
    if unit == "rows":
        for a in range(accum, 2 * accum + 1):  # an exact split when one is near
            if requested % (world_size * a) == 0 and requested // (world_size * a) <= fit:
                return requested // (world_size * a), a
        return -(-per_rank // accum), accum
    need = -(-per_rank // accum)  # the smallest budget giving the same number of steps
    return min(fit, max(smallest, -(-need // quantum) * quantum)), accum


def fixed_decision(unit: str, size: int, requested: int | None, world_size: int,
                   grad_accum: int | None, longest: int | None = None) -> BatchDecision:
    """The decision for a size given on the command line (no probe)."""
    if requested is not None:
        accum = max(1, -(-requested // (world_size * size)))
        if grad_accum is not None:
            raise TrainError("give --grad-accum or a global batch (--global-batch-size/--global-batch-tokens), not both")
        return BatchDecision(unit, size, accum, world_size, requested, longest=longest)
    return BatchDecision(unit, size, grad_accum or 1, world_size, None, longest=longest)


def probe_decision(unit: str, model: Any, args: Any, lengths: Sequence[int], rows_by_length: Sequence[dict],
                   collator: ShardCollator, *, requested: int | None, grad_accum: int | None,
                   memory_limit: int | None, margin: float = DEFAULT_MARGIN, meter: Any = None,
                   device: Any = None) -> BatchDecision:
    """Probe ``model`` on ``args.device`` with the worst-case batches and decide the batch.

    ``rows_by_length`` are the longest rows, longest first, as the collator takes them; the search
    never goes past what they (or the requested effective batch per process) can fill.
    """
    import torch
    from transformers import Trainer

    world = max(1, int(args.world_size))
    device = device if device is not None else args.device
    cap = None if requested is None else -(-requested // world)
    space = search_space(unit, lengths, collator.padding_free, collator.pad_to_multiple_of, cap)
    meter = meter or meter_for(device, memory_limit)
    model.to(device).train()
    if getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False):
        model.gradient_checkpointing_enable()
    opt_cls, opt_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    prober = Prober(model, device, meter, collator, rows_by_length,
                    lambda m: opt_cls(m.parameters(), **{**opt_kwargs, "lr": 0.0}),
                    torch.bfloat16 if args.bf16 else (torch.float16 if args.fp16 else None), margin)
    try:
        best_k, _ = search_largest(space, lambda k: prober.trial(
            space.spec(k, collator.padding_free, collator.pad_to_multiple_of), space.size(k)))
    finally:
        prober.release()
    best_k = agree_across_ranks(best_k)
    fit = space.size(best_k)
    size, accum = accumulate(unit, fit, requested, world, grad_accum, space.quantum, space.size(space.k_min))
    by_size = {t.size: t for t in prober.trials if t.fits}
    chosen = by_size.get(size) or by_size.get(fit)
    return BatchDecision(unit, size, accum, world, requested, meter.name, meter.total(), prober.limit,
                         chosen.peak if chosen else None, chosen.size if chosen else None, fit, tuple(prober.trials),
                         space_longest(lengths, collator))


def space_longest(lengths: Sequence[int], collator: ShardCollator) -> int:
    return padded_width(int(max(lengths)), collator.pad_to_multiple_of)


def longest_rows(ds: Any, lengths: Sequence[int], unit: str, padding_free: bool, cap_rows: int,
                 cap_tokens: int) -> list[dict]:
    """The rows a worst-case batch can need, longest first (read from the mapped shards)."""
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.lexsort((np.arange(len(lens)), -lens)).tolist()
    if unit == "tokens" and padding_free:
        take, total = 0, 0
        while take < len(order) and total < cap_tokens:
            total += int(lens[order[take]])
            take += 1
    else:
        take = min(len(order), cap_rows)
    return [dict(r) for r in ds.select(order[:take])]
