"""``--batch-size auto`` / ``--batch-tokens auto``: the largest micro-batch that fits, found before step 1.

Why not Hugging Face's ``auto_find_batch_size``: it waits for an out-of-memory error during
training, shrinks the batch by 10 % and restarts the loop (a long batch at hour three restarts the
run), and it does not raise gradient accumulation, so the effective batch silently shrinks. Here
the shards' lengths say what the worst micro-batch the sampler can produce looks like (the longest
rows), so the probe runs forward, backward *and* the optimizer step (its state is part of the
peak) on exactly that batch, built by the real collator, on the real device, for each candidate
size: doubling until a trial fails, then bisecting. A trial fails on an out-of-memory error or when
its measured peak exceeds the budget less the margin. The optimizer runs with a learning rate of
0, so the weights are unchanged; everything is released before training starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sftdata.errors import TrainError
from sftdata.planning.collator import ShardCollator
from sftdata.planning.memory import DEFAULT_MARGIN, MemoryMeter, format_bytes, is_out_of_memory
from sftdata.planning.token_batches import BatchSpec, padded_width

MAX_PROBE_ROWS = 4096


@dataclass(frozen=True)
class Trial:
    """One probe step: the size tried, the peak measured (``None`` after an OOM), and the verdict."""

    size: int
    peak: int | None
    fits: bool
    note: str


@dataclass(frozen=True)
class SearchSpace:
    """Candidate sizes ``quantum * k`` for k in ``[k_min, k_max]``, in rows or tokens."""

    unit: str  # "rows" | "tokens"
    quantum: int
    k_min: int
    k_max: int

    def size(self, k: int) -> int:
        return self.quantum * k

    def spec(self, k: int, padding_free: bool, pad_to_multiple_of: int | None) -> BatchSpec:
        if self.unit == "rows":
            return BatchSpec(rows=self.size(k), padding_free=padding_free, pad_to_multiple_of=pad_to_multiple_of)
        return BatchSpec(tokens=self.size(k), padding_free=padding_free, pad_to_multiple_of=pad_to_multiple_of)


def search_space(unit: str, lengths: Sequence[int], padding_free: bool, pad_to_multiple_of: int | None,
                 cap: int | None = None) -> SearchSpace:
    """Where to search: whole rows of the longest width (padded tokens), or finer steps (padding-free)."""
    longest = padded_width(int(max(lengths)), pad_to_multiple_of)
    if unit == "rows":
        return SearchSpace("rows", 1, 1, max(1, min(len(lengths), MAX_PROBE_ROWS, cap or len(lengths))))
    total = int(sum(lengths)) if padding_free else longest * len(lengths)
    if padding_free:
        quantum = max(64, longest // 8)
        quantum = padded_width(quantum, pad_to_multiple_of)
    else:
        quantum = longest
    k_min = -(-longest // quantum)
    k_max = max(k_min, min(-(-total // quantum), (cap or total) // quantum, MAX_PROBE_ROWS * longest // quantum))
    return SearchSpace("tokens", quantum, k_min, k_max)


def worst_case_rows(rows_by_length: Sequence[dict[str, Any]], spec: BatchSpec) -> list[dict[str, Any]]:
    """The heaviest micro-batch ``spec`` allows, from rows sorted longest first.

    Rows: the ``spec.rows`` longest rows. Padded tokens: as many of the longest rows as the budget
    holds at their width. Padding-free tokens: the longest rows concatenated up to the budget, the
    last one cut so that the batch holds the whole budget.
    """
    if spec.rows is not None:
        return list(rows_by_length[:spec.rows])
    budget = spec.tokens or 0
    if not spec.padding_free:
        width = padded_width(len(rows_by_length[0]["input_ids"]), spec.pad_to_multiple_of)
        return list(rows_by_length[:max(1, budget // width)])
    out, used = [], 0
    for row in rows_by_length:
        room = budget - used
        if room <= 0:
            break
        row = dict(row)
        if "position_ids" not in row:
            row["position_ids"] = ShardCollator._positions(row, _torch()).tolist()
            row.pop("seq_lengths", None)
        if len(row["input_ids"]) > room:
            row = {k: list(row[k])[:room] for k in ("input_ids", "labels", "position_ids")}
        out.append(row)
        used += len(row["input_ids"])
    return out


def _torch() -> Any:
    import torch

    return torch


@dataclass
class Prober:
    """Runs probe steps of ``model`` on ``device`` and measures them with ``meter``."""

    model: Any
    device: Any
    meter: MemoryMeter
    collator: ShardCollator
    rows_by_length: Sequence[dict[str, Any]]
    make_optimizer: Callable[[Any], Any]
    autocast_dtype: Any = None
    margin: float = DEFAULT_MARGIN
    trials: list[Trial] = field(default_factory=list)
    _optimizer: Any = None

    @property
    def limit(self) -> int:
        return int(self.meter.budget() - self.margin * self.meter.total())

    def trial(self, spec: BatchSpec, size: int) -> Trial:
        torch = _torch()
        if self._optimizer is None:
            self._optimizer = self.make_optimizer(self.model)
        batch = self.collator(worst_case_rows(self.rows_by_length, spec))
        self.meter.reset()
        peak: int | None = None
        try:
            batch = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}
            ctx = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                   else contextlib.nullcontext())
            with ctx:
                loss = self.model(**batch).loss
            loss.backward()
            del loss
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)
            peak = self.meter.peak()
            fits, note = peak <= self.limit, "fits" if peak <= self.limit else "over the budget"
        except Exception as exc:  # noqa: BLE001 - anything but OOM is re-raised below
            if not is_out_of_memory(exc):
                raise
            fits, note = False, "out of memory"
        finally:
            batch = None
            self.model.zero_grad(set_to_none=True)
            self.meter.reset()
        result = Trial(size, peak, fits, note)
        self.trials.append(result)
        return result

    def release(self) -> None:
        """Drop the optimizer state and the allocator's cache before training starts."""
        self._optimizer = None
        self.model.zero_grad(set_to_none=True)
        self.meter.reset()


def search_largest(space: SearchSpace, try_k: Callable[[int], Trial]) -> tuple[int, Trial]:
    """The largest k whose trial fits: doubling from ``k_min``, then bisecting the last gap."""
    first = try_k(space.k_min)
    if not first.fits:
        what = f"{space.size(space.k_min)} {space.unit}"
        raise TrainError(f"the smallest micro-batch ({what}, the longest rows) does not fit: {first.note}, "
                         f"peak {format_bytes(first.peak)}; use a smaller model, bf16, gradient checkpointing "
                         "or shorter rows")
    good, good_trial, bad = space.k_min, first, None
    k = space.k_min
    while bad is None and good < space.k_max:
        k = min(space.k_max, max(k * 2, k + 1))
        t = try_k(k)
        if t.fits:
            good, good_trial = k, t
        else:
            bad = k
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        t = try_k(mid)
        if t.fits:
            good, good_trial = mid, t
        else:
            bad = mid
    return good, good_trial


def agree_across_ranks(k: int) -> int:
    """Under ``torch.distributed`` every rank takes the smallest size any rank found."""
    torch = _torch()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = torch.tensor([k], device="cuda" if torch.cuda.is_available() else "cpu")
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
        return int(value.item())
    return k
