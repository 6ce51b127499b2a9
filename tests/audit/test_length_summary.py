"""The audit's length figures from fixed-size summaries equal the figures of the full per-row arrays.

The reference functions below are the computation the report used before (every row's length and
trained count concatenated, sorted, ``np.percentile``, ``np.histogram``); the summary is fed the
same rows in arbitrary slices and merged in arbitrary groups, as shards and workers do.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata.audit.summary import LengthSummary


def _histogram(values: np.ndarray, lo: float, hi: float, bins: int) -> dict[str, list]:
    counts, edges = np.histogram(values, bins=bins, range=(lo, max(hi, lo + 1e-9)))
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}


def reference(lengths: np.ndarray, trained: np.ndarray, max_length: int | None) -> dict:
    ordered = np.sort(lengths)

    def pct(q: float) -> float:
        return float(np.percentile(ordered, q)) if ordered.size else 0.0

    return {"length": {"min": int(lengths.min(initial=0)) if lengths.size else 0, "max": int(lengths.max(initial=0)),
                       "mean": float(lengths.mean()) if lengths.size else 0.0, "p50": pct(50), "p95": pct(95)},
            "length_histogram": _histogram(lengths, 0, float(max(max_length or 0, lengths.max(initial=1))), 32),
            "trained_fraction_histogram": _histogram(trained / np.maximum(lengths, 1), 0.0, 1.0, 20)}


def summarised(lengths: np.ndarray, trained: np.ndarray, max_length: int | None, cuts: list[int],
               groups: int) -> dict:
    bounds = sorted({0, len(lengths), *(c % (len(lengths) + 1) for c in cuts)})
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = LengthSummary()
        part.add(lengths[a:b], trained[a:b])
        parts.append(part)
    total = LengthSummary()
    for g in range(groups):  # merged per "worker" first, then into the total, in order
        worker = LengthSummary()
        for part in parts[g::groups]:
            worker.merge(part)
        total.merge(worker)
    return {"length": total.figures(), "length_histogram": total.length_histogram(max_length),
            "trained_fraction_histogram": total.fraction_histogram()}


rows = st.lists(st.tuples(st.integers(0, 70_000), st.integers(0, 100)), max_size=300)


@settings(max_examples=300, deadline=None)
@given(rows=rows, max_length=st.one_of(st.none(), st.integers(1, 100_000)),
       cuts=st.lists(st.integers(0, 400), max_size=6), groups=st.integers(1, 3))
def test_summary_figures_equal_the_full_array_figures(rows, max_length, cuts, groups):
    lengths = np.array([n for n, _ in rows], np.int64)
    trained = np.array([min(n, round(n * p / 100)) for n, p in rows], np.int32)
    assert summarised(lengths, trained, max_length, cuts, groups) == reference(lengths, trained, max_length)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(1, 9), min_size=1, max_size=40), repeat=st.integers(1, 50_000),
       q=st.floats(0, 100))
def test_percentile_equals_numpy_on_many_equal_lengths(values, repeat, q):
    """Large counts of few lengths: the interpolation between two neighbours, at any q."""
    lengths = np.repeat(np.array(values, np.int64), repeat)
    summary = LengthSummary()
    summary.add(lengths, np.zeros(len(lengths), np.int32))
    assert summary.percentile(q) == float(np.percentile(np.sort(lengths), q))
