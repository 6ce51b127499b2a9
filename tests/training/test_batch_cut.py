"""The vectorised epoch cut against the plain greedy rule it implements, row by row."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata.errors import TrainError
from sftdata.planning.token_batches import BatchSpec, epoch_plan, padded_width


def greedy(order: list[int], lengths: list[int], spec: BatchSpec) -> list[list[int]]:
    """The rule as the sampler documents it: a batch takes the next row while its size as collated
    (padded width x rows, or the padded concatenation) stays within the budget."""
    if spec.rows is not None:
        return [order[i:i + spec.rows] for i in range(0, len(order), spec.rows)]
    batches: list[list[int]] = []
    for i in order:
        grown = batches[-1] + [i] if batches else None
        if grown is not None and spec.size_of([lengths[j] for j in grown]) <= spec.tokens:
            batches[-1] = grown
        else:
            batches.append([i])
    return batches


def split_widest(batches: list[list[int]], world: int) -> list[list[int]]:
    while len(batches) % world:
        w = max(range(len(batches)), key=lambda b: (len(batches[b]), -b))
        if len(batches[w]) < 2:
            raise ValueError("one-row batches only")
        half = (len(batches[w]) + 1) // 2
        batches[w:w + 1] = [batches[w][:half], batches[w][half:]]
    return batches


specs = st.one_of(
    st.builds(lambda r: BatchSpec(rows=r), st.integers(1, 9)),
    st.builds(lambda k, extra, free, m: (k, extra, free, m), st.integers(1, 6), st.integers(0, 63), st.booleans(),
              st.sampled_from([None, 8, 64])),
)


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=200), spec=specs,
       world=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_the_cut_is_the_greedy_rule(lengths, spec, world, seed):
    if isinstance(spec, tuple):  # a token budget of k times the longest row as collated, and some
        k, extra, free, multiple = spec
        spec = BatchSpec(tokens=k * padded_width(max(lengths), multiple) + extra, padding_free=free,
                         pad_to_multiple_of=multiple)
    try:
        epoch = epoch_plan(lengths, spec, seed, 0, world)
    except TrainError:  # one-row batches that cannot be shared equally: the rule cannot either
        order = epoch_plan(lengths, spec, seed, 0, 1).order.tolist()
        with pytest.raises(ValueError):
            split_widest(greedy(order, lengths, spec), world)
        return
    expected = split_widest(greedy(epoch.order.tolist(), lengths, spec), world)
    got = epoch.batches()
    assert sorted(map(tuple, got)) == sorted(map(tuple, expected))
    assert sorted(i for b in got for i in b) == list(range(len(lengths)))
    assert epoch.real.tolist() == [sum(lengths[i] for i in b) for b in got]
    assert epoch.batched.tolist() == [spec.size_of([lengths[i] for i in b]) for b in got]
    heaviest = max((max(lengths[i] for i in b), spec.size_of([lengths[i] for i in b])) for b in got)
    first = got[0]
    assert (max(lengths[i] for i in first), spec.size_of([lengths[i] for i in first])) == heaviest


def test_token_order_is_longest_first_and_seeded():
    lengths = [5, 9, 9, 1, 9, 3] * 50
    a = epoch_plan(lengths, BatchSpec(tokens=40), seed=1)
    assert [lengths[i] for i in a.order] == sorted(lengths, reverse=True)
    assert np.array_equal(a.order, epoch_plan(lengths, BatchSpec(tokens=40), seed=1).order)
    assert not np.array_equal(a.order, epoch_plan(lengths, BatchSpec(tokens=40), seed=2).order)
    assert not np.array_equal(a.order, epoch_plan(lengths, BatchSpec(tokens=40), seed=1, epoch=1).order)


def test_one_row_batches_that_cannot_be_shared_are_refused():
    with pytest.raises(TrainError, match="cannot be shared equally"):
        epoch_plan([7, 7, 7], BatchSpec(tokens=7), seed=0, world_size=2)
