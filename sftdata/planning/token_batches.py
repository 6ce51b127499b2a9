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

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

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


def check_rows_fit(lengths: Sequence[int], ids: Sequence[str] | None, spec: BatchSpec) -> None:
    """Refuse a token budget that the longest row alone exceeds, naming that row."""
    if spec.tokens is None or not lengths:
        return
    worst = max(range(len(lengths)), key=lambda i: (lengths[i], -i))
    need = spec.size_of([lengths[worst]])
    if need > spec.tokens:
        name = ids[worst] if ids is not None else f"index {worst}"
        over = sum(spec.size_of([n]) > spec.tokens for n in lengths)
        raise TrainError(f"--batch-tokens {spec.tokens} is smaller than row {name!r} ({lengths[worst]} tokens, "
                         f"{need} as batched); {over} row(s) do not fit: raise --batch-tokens to at least {need}")


def _cut(order: list[int], lengths: Sequence[int], spec: BatchSpec) -> list[list[int]]:
    """Greedy cut of ``order``: a batch takes the next row while the materialised size stays in budget."""
    batches: list[list[int]] = []
    current: list[int] = []
    if spec.rows is not None:
        return [order[i:i + spec.rows] for i in range(0, len(order), spec.rows)]
    longest = total = 0
    for i in order:
        n = lengths[i]
        grown = (padded_width(total + n, spec.pad_to_multiple_of) if spec.padding_free
                 else padded_width(max(longest, n), spec.pad_to_multiple_of) * (len(current) + 1))
        if current and grown > spec.tokens:  # type: ignore[operator]
            batches.append(current)
            current, longest, total = [], 0, 0
        current.append(i)
        longest, total = max(longest, n), total + n
    if current:
        batches.append(current)
    return batches


def _equalise(batches: list[list[int]], world_size: int) -> list[list[int]]:
    """Split the batches with the most rows until the count is a multiple of ``world_size``."""
    while len(batches) % world_size:
        widest = max(range(len(batches)), key=lambda b: (len(batches[b]), -b))
        rows = batches[widest]
        if len(rows) < 2:
            raise TrainError(f"{len(batches)} micro-batches of one row each cannot be shared equally by "
                             f"{world_size} processes; use a smaller token budget, fewer processes or more rows")
        half = (len(rows) + 1) // 2
        batches[widest:widest + 1] = [rows[:half], rows[half:]]
    return batches


def epoch_batches(lengths: Sequence[int], spec: BatchSpec, seed: int, epoch: int = 0,
                  world_size: int = 1) -> list[list[int]]:
    """All micro-batches of one epoch, in the order the ranks take them (rank r: r, r+W, ...)."""
    rng = random.Random(f"{seed}:{epoch}")  # a string seed hashes deterministically across runs
    if spec.tokens is not None:  # sorted by length, longest first; equal lengths in a shuffled order
        keys = [rng.random() for _ in lengths]
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], keys[i]))
    else:  # row-count batches: the usual random batches
        order = list(range(len(lengths)))
        rng.shuffle(order)
    batches = _equalise(_cut(order, lengths, spec), world_size)
    rank_key = [(max(lengths[i] for i in b), spec.size_of([lengths[i] for i in b])) for b in batches]
    by_weight = sorted(range(len(batches)), key=lambda b: rank_key[b], reverse=True)
    first = by_weight[:world_size]  # each rank's first batch is among the heaviest
    rest = by_weight[world_size:]
    rng.shuffle(rest)
    return [batches[b] for b in first + rest]


def dataset_lengths(ds: Any) -> list[int]:
    """Every row's token count, read by Arrow from the mapped shards (no row is decoded)."""
    import pyarrow.compute as pc

    return [int(n) for chunk in ds.data.column("input_ids").chunks for n in pc.list_value_length(chunk).to_pylist()]


def dataset_ids(ds: Any) -> list[str] | None:
    """The rows' ``id`` column, when the shards have one (for naming the rows a check refuses)."""
    return [str(x) for x in ds["id"]] if "id" in ds.column_names else None


class ShardBatchSampler:
    """A batch sampler (``DataLoader(batch_sampler=...)``) for one rank, reshuffled by ``set_epoch``."""

    def __init__(self, lengths: Sequence[int], spec: BatchSpec, *, seed: int = 42, rank: int = 0,
                 world_size: int = 1, ids: Sequence[str] | None = None) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        check_rows_fit(lengths, ids, spec)
        self.lengths, self.spec, self.seed = list(lengths), spec, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self._count = len(epoch_batches(self.lengths, spec, seed, 0, world_size)) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        batches = epoch_batches(self.lengths, self.spec, self.seed, self.epoch, self.world_size)
        yield from batches[self.rank::self.world_size]

    def __len__(self) -> int:
        return self._count
