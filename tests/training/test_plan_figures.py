"""`sftdata plan`'s figures without the epoch's per-row arrays equal those of the training sampler's epoch.

The reference is the plan's former computation, kept here: ``epoch_plan`` (the sampler's own cut,
split across processes and ordered) measured whole. The new one arranges the rows in one array of
the lengths' dtype, keeps the cut as runs and measures them in blocks (`sftdata.planning.figures`).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata.errors import TrainError
from sftdata.planning import figures
from sftdata.planning.plan import SizeFigures, length_histogram, make_plan, size_figures
from sftdata.planning.token_batches import BatchSpec, dataset_ids, dataset_lengths, epoch_plan
from tests.batching_data import prepare, skewed_records
from tests.conftest import load


def reference(lengths, spec: BatchSpec, grad_accum: int, world_size: int, seed: int) -> SizeFigures:
    ep = epoch_plan(lengths, spec, seed, 0, world_size)
    batches, real, batched = len(ep.starts), int(ep.real.sum()), int(ep.batched.sum())
    unit, size = ("tokens", spec.tokens) if spec.tokens else ("rows", spec.rows)
    mean_real = real / batches
    return SizeFigures(unit, int(size or 0), batches // world_size, 1 - real / batched, len(ep.order) / batches,
                       mean_real, int(ep.batched.max()), mean_real * grad_accum * world_size)


def outcome(fn):
    try:
        return fn()
    except (TrainError, ZeroDivisionError) as exc:  # a refusal, or no real token at all: the same either way
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=400, deadline=None)
@given(lengths=st.lists(st.integers(1, 3000), min_size=1, max_size=400), kind=st.sampled_from(["rows", "tokens"]),
       size=st.integers(1, 9000), free=st.booleans(), multiple=st.sampled_from([None, 1, 8, 64]),
       world=st.integers(1, 9), seed=st.integers(0, 3), dtype=st.sampled_from([np.uint16, np.int32, np.int64]),
       few=st.booleans())
def test_figures_equal_the_sampler_epochs(lengths, kind, size, free, multiple, world, seed, dtype, few):
    if few:  # long runs of equal lengths: the cut's repeated batches and the splits inside them
        lengths = [1 + n % 5 * 700 for n in lengths] * 7
    lens = np.array(lengths, dtype)
    if kind == "tokens":
        size = max(size, max(-(-n // multiple) * multiple if multiple else n for n in lengths))
    spec = BatchSpec(**{kind: size}, padding_free=free, pad_to_multiple_of=multiple)
    want = outcome(lambda: reference(lens.astype(np.int64), spec, 3, world, seed))
    assert outcome(lambda: size_figures(lens, spec, 3, world, seed)) == want


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 50), min_size=1, max_size=200), budget=st.integers(1, 120),
       world=st.integers(1, 4))
def test_zero_length_rows_in_a_padding_free_budget(lengths, budget, world):
    lens = np.array(lengths, np.uint16)
    budget = max(budget, max(lengths))
    spec = BatchSpec(tokens=budget, padding_free=True)
    want = outcome(lambda: reference(lens.astype(np.int64), spec, 1, world, 0))
    assert outcome(lambda: size_figures(lens, spec, 1, world, 0)) == want


def test_blocks_smaller_than_the_epoch_measure_the_same(monkeypatch):
    lens = np.random.default_rng(5).integers(1, 4000, 5000).astype(np.uint16)
    specs = [BatchSpec(rows=2), BatchSpec(rows=3), BatchSpec(tokens=9000), BatchSpec(tokens=9000, padding_free=True)]
    whole = [size_figures(lens, s, 1, 3, 1) for s in specs]
    monkeypatch.setattr(figures, "BLOCK_ROWS", 7)
    assert [size_figures(lens, s, 1, 3, 1) for s in specs] == whole == [reference(lens, s, 1, 3, 1) for s in specs]


def test_length_histogram_counts_every_row_in_its_bin():
    lens = np.array([1, 64, 65, 128, 129, 5000, 70000], np.int64)
    assert length_histogram(lens) == length_histogram(lens.astype(np.int32)) == [
        (1, 64, 2), (65, 128, 2), (129, 256, 1), (257, 512, 0), (513, 1024, 0), (1025, 2048, 0), (2049, 4096, 0),
        (4097, 8192, 1), (8193, 16384, 0), (16385, 32768, 0), (32769, 65536, 0), (65537, 131072, 1)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("planfig"), skewed_records(70, seed=3), "data", "--shard-size", "20000")


def test_the_plan_reads_the_lengths_and_longest_rows_of_every_shard(folder):
    ds = load(folder)
    lengths, ids = dataset_lengths(ds), dataset_ids(ds)
    assert len(ds.data.to_batches()) > 1 or len(list(folder.glob("shard-*.arrow"))) > 1
    plan = make_plan(folder, world_size=2)
    order = np.lexsort((np.arange(len(lengths)), -lengths))[:5]
    assert plan.longest == [(ids[i], int(lengths[i])) for i in order]
    assert plan.rows == len(lengths) and plan.tokens == int(lengths.sum())
    assert plan.histogram == length_histogram(lengths)
    assert plan.sizes[0] == reference(lengths, BatchSpec(rows=1), 1, 2, 42)


def test_length_histogram_holds_no_int64_copy_of_the_rows():
    """Counted a block at a time (issue 31): equal to a whole-array count, and its peak memory is far
    below the 8 bytes a row that ``np.bincount`` of the whole column would copy."""
    import tracemalloc

    lens = np.random.default_rng(3).integers(1, 5000, 2_000_003).astype(np.uint16)
    counts = np.bincount(lens.astype(np.int64))
    values = np.flatnonzero(counts)
    edges = [0, 64] + [64 << k for k in range(1, 8)]
    expected = np.histogram(values, bins=np.array(edges) + 0.5, weights=counts[values])[0].astype(int).tolist()
    tracemalloc.start()
    try:
        got = length_histogram(lens)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [n for _, _, n in got] == expected and sum(n for _, _, n in got) == lens.size
    assert peak < 4 * lens.size, peak  # the whole-column bincount: 16 MB here
