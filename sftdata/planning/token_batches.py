"""Micro-batches cut by a token budget (``--batch-tokens N``) or a row count, from the shards' lengths.

Why: with row-count batches the memory a step needs depends on which lengths were sampled, and
padding to the longest row wastes compute. The shards know every row's length before training, so
batches can be cut to hold at most N tokens *as the collator materialises them* (padded length x
rows for padded batches, the concatenated length for padding-free and packed rows, both rounded
up as ``pad_to_multiple_of`` rounds them), with rows grouped by length to cut padding.

Properties (tested on the real collator's tensors in ``tests/training/test_batch_tokens.py``):

- every row exactly once per epoch; a row longer than N is refused before step 1, with its id;
- deterministic for a seed: rows are sorted by length, rows of equal length are shuffled among
  themselves each epoch, the greedy cut runs over that order, and the batch order is shuffled;
- the same number of batches every epoch (the sorted lengths do not change), so the Trainer's
  steps-per-epoch arithmetic holds;
- the first batch of every epoch is the one with the longest row (ties: the most tokens), so a
  wrong memory estimate fails in the first second, not at hour three;
- several processes: the batch count is made a multiple of the world size by splitting the
  batches with the most rows (never merging, so no batch outgrows the budget) and rank r takes
  batches r, r+W, ...; every rank gets the same number of micro-batches, so none waits forever.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sftdata.errors import TrainError


def padded_width(n: int, multiple: int | None) -> int:
    """``n`` rounded up to ``multiple`` (the collator's ``pad_to_multiple_of``)."""
    return -(-n // multiple) * multiple if multiple else n


def materialised_tokens(lengths: Sequence[int], padding_free: bool, pad_to_multiple_of: int | None = None) -> int:
    """The number of token positions the collator builds for rows of these lengths."""
    if not lengths:
        return 0
    if padding_free:
        return padded_width(sum(lengths), pad_to_multiple_of)
    return padded_width(max(lengths), pad_to_multiple_of) * len(lengths)


@dataclass(frozen=True)
class BatchSpec:
    """How micro-batches are cut: ``tokens`` (a budget) or ``rows`` (a count), never both."""

    tokens: int | None = None
    rows: int | None = None
    padding_free: bool = False
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.rows is None):
            raise ValueError("a BatchSpec takes exactly one of tokens= or rows=")
        if (self.tokens or self.rows or 0) < 1:
            raise ValueError("a batch holds at least one token and one row")

    def size_of(self, lengths: Sequence[int]) -> int:
        return materialised_tokens(lengths, self.padding_free, self.pad_to_multiple_of)

    def describe(self) -> str:
        kind = "padding-free" if self.padding_free else "padded"
        return f"{self.tokens} tokens per micro-batch ({kind})" if self.tokens else f"{self.rows} rows per micro-batch"


def check_rows_fit(lengths: Sequence[int] | np.ndarray, ids: Sequence[str] | None, spec: BatchSpec) -> None:
    """Refuse a token budget that the longest row alone exceeds, naming that row."""
    lens = np.asarray(lengths, dtype=np.int64)
    if spec.tokens is None or not len(lens):
        return
    worst = int(np.argmax(lens))  # the first of the longest
    need = spec.size_of([int(lens[worst])])
    if need > spec.tokens:
        name = ids[worst] if ids is not None else f"index {worst}"
        multiple = spec.pad_to_multiple_of
        over = int(np.count_nonzero((-(-lens // multiple) * multiple if multiple else lens) > spec.tokens))
        raise TrainError(f"--batch-tokens {spec.tokens} is smaller than row {name!r} ({int(lens[worst])} tokens, "
                         f"{need} as batched); {over} row(s) do not fit: raise --batch-tokens to at least {need}")


def _rng(seed: int, epoch: int) -> np.random.Generator:
    """The epoch's random generator: a pure function of (seed, epoch), the same on every rank and run."""
    digest = hashlib.sha256(f"{seed}:{epoch}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _cut(lens: np.ndarray, spec: BatchSpec) -> np.ndarray:
    """Greedy cut of rows in order (``lens`` their lengths): the start of each batch. A batch
    takes the next row while its materialised size stays in budget. Token budgets see the rows
    sorted longest first, so a padded batch's width is its first row's: it holds
    ``budget // width`` rows; a padding-free batch runs while its concatenated length fits."""
    n = len(lens)
    if spec.rows is not None:
        return np.arange(0, n, spec.rows, dtype=np.int64)
    budget, multiple = int(spec.tokens or 0), spec.pad_to_multiple_of
    starts: list[int] = []
    i = 0
    if spec.padding_free:
        cap = budget // multiple * multiple if multiple else budget  # padded(x) <= budget  <=>  x <= cap
        ends = np.concatenate(([0], np.cumsum(lens, dtype=np.int64)))
        while i < n:
            starts.append(i)
            i = max(int(np.searchsorted(ends, ends[i] + cap, side="right")) - 1, i + 1)
    else:
        while i < n:
            starts.append(i)
            i += max(1, budget // padded_width(int(lens[i]), multiple))
    return np.array(starts, dtype=np.int64)


def _equalise(starts: np.ndarray, n: int, world_size: int) -> np.ndarray:
    """Split the batches with the most rows until the count is a multiple of ``world_size``."""
    while len(starts) % world_size:
        sizes = np.diff(np.append(starts, n))
        widest = int(np.argmax(sizes))  # the first of the widest
        if sizes[widest] < 2:
            raise TrainError(f"{len(starts)} micro-batches of one row each cannot be shared equally by "
                             f"{world_size} processes; use a smaller token budget, fewer processes or more rows")
        starts = np.insert(starts, widest + 1, starts[widest] + (sizes[widest] + 1) // 2)
    return starts


@dataclass(frozen=True)
class Epoch:
    """One epoch's micro-batches, in the order the ranks take them (rank r: r, r+W, ...): batch ``b``
    is ``order[starts[b]:ends[b]]``, ``real[b]`` its tokens and ``batched[b]`` its size as collated."""

    order: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    real: np.ndarray
    batched: np.ndarray

    def batches(self) -> list[list[int]]:
        return [self.order[s:e].tolist() for s, e in zip(self.starts.tolist(), self.ends.tolist(), strict=True)]


def epoch_plan(lengths: Sequence[int] | np.ndarray, spec: BatchSpec, seed: int, epoch: int = 0,
               world_size: int = 1) -> Epoch:
    """Cut one epoch: token budgets sort rows longest first (equal lengths in a shuffled order),
    row counts shuffle them; the heaviest ``world_size`` batches go first, the rest shuffled."""
    rng = _rng(seed, epoch)
    lens_all = np.asarray(lengths, dtype=np.int64)
    if spec.tokens is not None:
        n = len(lens_all)  # one int64 key per row: length descending, then a random rank (all distinct)
        order = np.argsort((lens_all.max(initial=0) - lens_all) * n + rng.permutation(n))
    else:
        order = rng.permutation(len(lens_all))
    lens = lens_all[order]
    starts = _equalise(_cut(lens, spec), len(lens), world_size)
    ends = np.append(starts[1:], len(lens))
    widest = np.maximum.reduceat(lens, starts) if len(lens) else np.zeros(0, np.int64)
    real = np.add.reduceat(lens, starts) if len(lens) else np.zeros(0, np.int64)
    multiple = spec.pad_to_multiple_of
    rounded = (lambda x: -(-x // multiple) * multiple) if multiple else (lambda x: x)
    batched = rounded(real) if spec.padding_free else rounded(widest) * (ends - starts)
    by_weight = np.lexsort((np.arange(len(starts)), -batched, -widest))  # heaviest first, ties in cut order
    first, rest = by_weight[:world_size], by_weight[world_size:]
    pick = np.concatenate((first, rest[rng.permutation(len(rest))]))
    return Epoch(order, starts[pick], ends[pick], real[pick], batched[pick])


def epoch_batches(lengths: Sequence[int], spec: BatchSpec, seed: int, epoch: int = 0,
                  world_size: int = 1) -> list[list[int]]:
    """All micro-batches of one epoch as row indices, in the order the ranks take them."""
    return epoch_plan(lengths, spec, seed, epoch, world_size).batches()


def dataset_lengths(ds: Any) -> np.ndarray:
    """Every row's token count, read by Arrow from the mapped shards (no row is decoded)."""
    import pyarrow.compute as pc

    chunks = [pc.list_value_length(c).to_numpy(zero_copy_only=False) for c in ds.data.column("input_ids").chunks]
    return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, np.int64)


def dataset_ids(ds: Any) -> list[str] | None:
    """The rows' ``id`` column, when the shards have one (for naming the rows a check refuses)."""
    return [str(x) for x in ds["id"]] if "id" in ds.column_names else None


class ShardBatchSampler:
    """A batch sampler (``DataLoader(batch_sampler=...)``) for one rank, reshuffled by ``set_epoch``."""

    def __init__(self, lengths: Sequence[int] | np.ndarray, spec: BatchSpec, *, seed: int = 42, rank: int = 0,
                 world_size: int = 1, ids: Sequence[str] | None = None) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        check_rows_fit(lengths, ids, spec)
        self.lengths, self.spec, self.seed = np.asarray(lengths, dtype=np.int64), spec, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self._count = len(epoch_plan(self.lengths, spec, seed, 0, world_size).starts) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        batches = epoch_batches(self.lengths, self.spec, self.seed, self.epoch, self.world_size)
        yield from batches[self.rank::self.world_size]

    def __len__(self) -> int:
        return self._count
