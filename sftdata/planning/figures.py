"""One epoch's batch figures for ``sftdata plan`` without the epoch's per-row arrays.

Why: :func:`sftdata.planning.token_batches.epoch_plan` builds what training needs (the row order,
every batch's start, end, real and batched tokens, the batch order), several int64 arrays per row
and per batch. The plan's figures need less: how many batches, their total real and batched
tokens and the largest batched size, none of which depends on the order the batches are taken in.
So the rows are arranged as ``epoch_plan`` arranges them, in one small array of the lengths' own
dtype (a row-count plan: the lengths shuffled by the same generator draws as
``rng.permutation(n)``, since a shuffle's swaps depend on ``n`` only; a token budget: the lengths
sorted longest first, which is what the random tie-break among equal lengths leaves), the cut is
kept as runs of equal-sized batches, ``_equalise``'s splits are made on those runs, and each run
is measured by reshaping its rows. ``tests/training/test_plan_figures.py`` compares every figure
with ``epoch_plan``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sftdata.errors import TrainError
from sftdata.planning.token_batches import BatchSpec, _rng, padded_width

BLOCK_ROWS = 1 << 16  # rows measured at a time (its int64 temporaries: a few hundred KiB each)


@dataclass(frozen=True)
class EpochTotals:
    """What one epoch's batches add up to: ``batches`` (all processes), ``rows``, ``real`` and
    ``batched`` tokens in total, and ``max_batched``, the largest batch as collated."""

    batches: int
    rows: int
    real: int
    batched: int
    max_batched: int


def shuffled(lengths: np.ndarray, seed: int, epoch: int = 0) -> np.ndarray:
    """``lengths[rng.permutation(len(lengths))]`` of ``epoch_plan``'s generator, without the permutation."""
    out = lengths.copy()
    _rng(seed, epoch).shuffle(out)
    return out


def _row_runs(n: int, rows: int) -> list[list[int]]:
    """The cut of a row-count spec as runs ``[first row, rows per batch, batches]``."""
    full, rest = divmod(n, rows)
    return [r for r in ([0, rows, full], [full * rows, rest, 1 if rest else 0]) if r[2]]


def _value_runs(ordered: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """(value, first row, rows) of each run of equal lengths in ``ordered`` (longest first)."""
    if not len(ordered):
        return [], [], []
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, len(ordered)))
    return ordered[starts].tolist(), starts.tolist(), counts.tolist()


def _padded_runs(ordered: np.ndarray, budget: int, multiple: int | None) -> list[list[int]]:
    """``_cut`` of a padded token budget over rows sorted longest first: a batch starting at a row of
    length v holds ``budget // padded(v)`` rows, so every batch starting in one run of v is alike."""
    values, firsts, counts = _value_runs(ordered)
    n, out, i, r = len(ordered), [], 0, 0
    while i < n:
        while firsts[r] + counts[r] <= i:
            r += 1
        size = max(1, budget // max(1, padded_width(values[r], multiple)))
        batches = -(-(firsts[r] + counts[r] - i) // size)
        if i + batches * size > n:  # the epoch's last batch is cut short
            out += [r_ for r_ in ([i, size, batches - 1], [i + (batches - 1) * size, n - i - (batches - 1) * size, 1])
                    if r_[2]]
        else:
            out.append([i, size, batches])
        i += batches * size
    return out


def _free_runs(ordered: np.ndarray, cap: int) -> list[list[int]]:
    """``_cut`` of a padding-free token budget over rows sorted longest first: a batch takes rows
    while their sum stays within ``cap`` (at least one). Inside a run of length v, batches of
    ``cap // v`` rows repeat; the batch that reaches the run's end goes on into the next runs."""
    values, firsts, counts = _value_runs(ordered)
    n, out, r, off = len(ordered), [], 0, 0
    while r < len(values):
        v, left, i = values[r], counts[r] - off, firsts[r] + off
        if v == 0:  # zero-length rows (last): the batch starting here takes them all
            out.append([i, n - i, 1])
            break
        if v > cap:  # every row alone
            out.append([i, 1, left])
            r, off = r + 1, 0
            continue
        size = cap // v
        repeat = (left - 1) // size
        if repeat:
            out.append([i, size, repeat])
        start, i, room = i + repeat * size, i + left, cap - (left - repeat * size) * v
        r, off = r + 1, 0
        while r < len(values):
            take = counts[r] if values[r] == 0 else min(counts[r], room // values[r])
            i, room = i + take, room - take * values[r]
            if take < counts[r]:
                off = take
                break
            r += 1
        out.append([start, i - start, 1])
    return out


def _equalise_runs(runs: list[list[int]], world_size: int) -> list[list[int]]:
    """``_equalise`` on runs: split the first of the batches with the most rows until the count is a
    multiple of ``world_size`` (the same splits, so the same batches)."""
    total = sum(r[2] for r in runs)
    while total % world_size:
        k = max(range(len(runs)), key=lambda j: (runs[j][1], -j))
        first, size, count = runs[k]
        if size < 2:
            raise TrainError(f"{total} micro-batches of one row each cannot be shared equally by "
                             f"{world_size} processes; use a smaller token budget, fewer processes or more rows")
        half = (size + 1) // 2
        runs[k:k + 1] = [[first, half, 1], [first + half, size - half, 1]] + (
            [[first + size, size, count - 1]] if count > 1 else [])
        total += 1
    return runs


def _measure(arranged: np.ndarray, runs: list[list[int]], spec: BatchSpec) -> EpochTotals:
    multiple = spec.pad_to_multiple_of
    real_sum = batched_sum = top = batches = 0
    for first, size, count in runs:
        step = max(1, BLOCK_ROWS // size)
        for b in range(0, count, step):
            k = min(step, count - b)
            block = arranged[first + b * size:first + (b + k) * size].reshape(k, size)
            real = block.sum(axis=1, dtype=np.int64)
            width = real if spec.padding_free else block.max(axis=1).astype(np.int64)
            if multiple:
                width = -(-width // multiple) * multiple
            batched = width if spec.padding_free else width * size
            real_sum, batched_sum = real_sum + int(real.sum()), batched_sum + int(batched.sum())
            top, batches = max(top, int(batched.max())), batches + k
    return EpochTotals(batches, len(arranged), real_sum, batched_sum, top)


def epoch_totals(arranged: np.ndarray, spec: BatchSpec, world_size: int = 1) -> EpochTotals:
    """The totals of ``epoch_plan(lengths, spec, seed, epoch, world_size)``, given the rows as it
    arranges them: ``shuffled(lengths, seed, epoch)`` for a row count, the lengths sorted longest
    first for a token budget."""
    if spec.rows is not None:
        runs = _row_runs(len(arranged), spec.rows)
    elif spec.padding_free:
        multiple = spec.pad_to_multiple_of
        runs = _free_runs(arranged, int(spec.tokens or 0) // multiple * multiple if multiple else int(spec.tokens or 0))
    else:
        runs = _padded_runs(arranged, int(spec.tokens or 0), spec.pad_to_multiple_of)
    return _measure(arranged, _equalise_runs(runs, world_size), spec)
