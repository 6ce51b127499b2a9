"""Which records of a mix are kept, how many times, and on which side of the split (docs/mixing.md).

Pure functions of the first pass's facts (``sftdata.mix.facts``: fixed-width columns) and the seed:
never of the input order of equal keys' neighbours, the number of workers or the executor. Every
order here is the *keyed order*: records sorted by ``sha256(f"{seed}:{content_hash}")``, ties
(records of the same content) broken by their place in the plan (chunk index, line). The keys are
compared as bytes, which is the order of their hex spellings; sorting and grouping are numpy's
(``np.lexsort`` over the keys' 64-bit words), never a Python object per record.
"""

from __future__ import annotations

import math

import numpy as np

from sftdata.errors import UsageError
from sftdata.mix.facts import Facts
from sftdata.mix.recipe import Split, Take


class MixBudgetError(UsageError):
    """A take or an eval size the valid records of a source cannot deliver (before any row is written)."""


def half_up(x: float) -> int:
    return math.floor(x + 0.5)


def words(keys: np.ndarray) -> list[np.ndarray]:
    """A (n, 8k) uint8 key matrix as its k 64-bit words read big-endian, most significant first.
    The matrix is consumed (turned into the words in place): pass a copy (``facts.order[idx]``)."""
    w = np.ascontiguousarray(keys).view(np.uint64)
    if np.little_endian:
        w.byteswap(inplace=True)
    return [w[:, j] for j in range(w.shape[1])]


def keyed_order(idx: np.ndarray, facts: Facts) -> np.ndarray:
    """The records ``idx`` in keyed order: by their order key, then chunk, then line."""
    w = words(facts.order[idx])
    return idx[np.lexsort((facts.lines[idx], facts.chunk[idx], *reversed(w)))]


def groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group of each row, first row of each group): rows of equal keys form a group; groups are
    numbered in ascending key order, and a group's first row is its earliest one."""
    n = len(keys)
    w = words(keys)
    perm = np.lexsort((np.arange(n), *reversed(w)))
    new = np.ones(n, dtype=bool)
    if n:
        same = np.ones(n - 1, dtype=bool)
        for col in w:
            same &= col[perm[1:]] == col[perm[:-1]]
        new[1:] = ~same
    gid = np.cumsum(new) - 1
    inverse = np.empty(n, dtype=np.int64)
    inverse[perm] = gid
    return inverse, perm[new]


def take_copies(idx: np.ndarray, facts: Facts, take: Take, name: str) -> np.ndarray:
    """Copies of each record ``idx`` of one source (0: not taken), aligned with ``idx``."""
    n = len(idx)
    copies = np.zeros(n, dtype=np.int64)
    if take.kind == "all":
        copies[:] = 1
        return copies
    ordered = np.searchsorted(idx, keyed_order(idx, facts))  # places in ``idx``, in keyed order
    pos = np.empty(n, dtype=np.int64)  # each record's place in keyed order
    pos[ordered] = np.arange(n)
    if take.kind == "records":
        if take.value > n:
            raise MixBudgetError(f"source {name}: take records {int(take.value)}, but it has only {n} valid "
                                 "record(s) after rejections, duplicates and decontamination")
        copies[pos < int(take.value)] = 1
    elif take.kind == "fraction":
        copies[pos < half_up(take.value * n)] = 1
    elif take.kind == "repeat":
        whole = math.floor(take.value)
        copies[:] = whole
        copies[pos < half_up((take.value - whole) * n)] += 1
    else:
        copies[ordered] = _take_tokens(facts.tokens[idx[ordered]].astype(np.int64), int(take.value), name)
    return copies


def _take_tokens(tokens: np.ndarray, budget: int, name: str) -> np.ndarray:
    """Greedy in keyed order, skipping a record that would overflow the budget: the kept rows sum
    to at most the budget, and every record not kept is longer than what is left of it."""
    total = int(tokens.sum())
    if total < budget:
        raise MixBudgetError(f"source {name}: take tokens {budget:,}, but its valid records hold only {total:,} "
                             "token(s) in all")
    kept = np.zeros(len(tokens), dtype=np.int64)
    whole = np.cumsum(tokens)
    head = int(np.searchsorted(whole, budget, side="right"))  # the prefix that fits as a whole
    kept[:head] = 1
    used = int(whole[head - 1]) if head else 0
    for i, t in enumerate(tokens[head:].tolist(), start=head):
        if used + t <= budget:
            kept[i] = 1
            used += t
    return kept


def split_eval(kept: np.ndarray, copies: np.ndarray, facts: Facts, split: Split, names: list[str]) -> np.ndarray:
    """Whether each record ``kept`` goes to eval. Whole prompt groups, in keyed order of their prompt
    hash, are added while the scope's eval size is below its target (per source, or the mix)."""
    group, _first = groups(facts.prompt[kept])
    count = int(group.max()) + 1 if len(group) else 0
    weight = copies[kept] * (facts.tokens[kept].astype(np.int64) if split.eval_kind == "tokens" else 1)
    source = facts.source[kept]
    scopes = [(n, source == i) for i, n in enumerate(names)] if split.per_source else [("the mix", None)]
    chosen = np.zeros(count, dtype=bool)
    for name, mine in scopes:
        w = np.bincount(group if mine is None else group[mine], weight if mine is None else weight[mine],
                        minlength=count).astype(np.int64)
        member = np.bincount(group if mine is None else group[mine], minlength=count) > 0
        whole = int(w.sum())
        target = half_up(split.eval_value * whole) if split.eval_kind == "fraction" else int(split.eval_value)
        if target > whole:
            raise MixBudgetError(f"split eval {split.eval_kind} {split.eval_value}: {name} has only {whole:,} "
                                 f"{'token(s)' if split.eval_kind == 'tokens' else 'row(s)'} to split")
        size = int(w[chosen].sum())
        if size >= target:
            continue
        candidates = np.flatnonzero(member & ~chosen)  # ascending group number: the keyed order
        reach = np.cumsum(w[candidates])
        add = min(int(np.searchsorted(reach, target - size, side="left")) + 1, len(candidates))
        chosen[candidates[:add]] = True
    return chosen[group]


def first_copies(idx: np.ndarray, facts: Facts) -> tuple[np.ndarray, np.ndarray]:
    """``dedupe: exact`` over the whole mix: (later copies, the kept first copy of each), as rows
    of ``facts``; ``idx`` are the records in plan order (sources in recipe order, chunks, lines)."""
    group, first = groups(facts.content[idx])
    later = np.flatnonzero(first[group] != np.arange(len(idx)))
    return idx[later], idx[first[group[later]]]
