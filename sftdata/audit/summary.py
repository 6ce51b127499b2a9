"""Row lengths and trained fractions as fixed-size summaries: the audit's statistics without a per-row array.

Why: the report's length figures (min, max, mean, p50, p95, a 32-bin histogram over a range that
depends on the longest row) and its 20-bin trained-fraction histogram were computed from every
row's length and trained count kept until the end, memory that grew with the rows (and travelled
from each worker process). Lengths are integers, so a count per distinct length gives every one of
those figures exactly: the k-th smallest length is found in the cumulative counts, numpy's linear
percentile is the same two neighbours and the same interpolation, a histogram of the distinct
lengths weighted by their counts puts every row in the bin ``np.histogram`` would. The trained
fraction's histogram has a fixed range (0 to 1), so per-slice bin counts simply add up.
``tests/audit/test_length_summary.py`` compares every figure with the full-array computation.
"""

from __future__ import annotations

import math

import numpy as np

FRACTION_BINS = 20
LENGTH_BINS = 32


def _histogram(values: np.ndarray, lo: float, hi: float, bins: int,
               weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram`` over ``[lo, hi]`` (a zero-width range widened as the report always did)."""
    return np.histogram(values, bins=bins, range=(lo, max(hi, lo + 1e-9)), weights=weights)


class LengthSummary:
    """How many rows have each length, and the trained-fraction histogram of those rows."""

    def __init__(self) -> None:
        self.values = np.zeros(0, np.int64)  # distinct lengths, ascending
        self.counts = np.zeros(0, np.int64)  # rows of each
        self.fractions = np.zeros(FRACTION_BINS, np.int64)

    def add(self, lengths: np.ndarray, trained: np.ndarray) -> None:
        """Rows of these lengths with these trained-token counts."""
        if not len(lengths):
            return
        frac = trained / np.maximum(lengths, 1)
        self.fractions += _histogram(frac, 0.0, 1.0, FRACTION_BINS)[0].astype(np.int64)
        values, counts = np.unique(np.asarray(lengths, np.int64), return_counts=True)
        self._add_counts(values, counts.astype(np.int64))

    def _add_counts(self, values: np.ndarray, counts: np.ndarray) -> None:
        if not len(self.values):
            self.values, self.counts = values, counts
            return
        merged, inverse = np.unique(np.concatenate([self.values, values]), return_inverse=True)
        total = np.zeros(len(merged), np.int64)
        np.add.at(total, inverse.reshape(-1), np.concatenate([self.counts, counts]))
        self.values, self.counts = merged, total

    def merge(self, other: LengthSummary) -> None:
        self.fractions += other.fractions
        if len(other.values):
            self._add_counts(other.values, other.counts)

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def _at(self, rank: int) -> int:
        """The length of the ``rank``-th shortest row (0-based)."""
        return int(self.values[int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))])

    def percentile(self, q: float) -> float:
        """``np.percentile(sorted lengths, q)`` (linear), 0.0 for no rows: the same neighbours and
        numpy's own interpolation formula (``_lerp``), so the same float."""
        n = self.rows
        if not n:
            return 0.0
        virtual = (n - 1) * (q / 100)
        if virtual >= n - 1:
            return float(self.values[-1])
        below = math.floor(virtual)
        t = virtual - below
        a, b = self._at(below), self._at(below + 1)
        diff = b - a
        return float(a + diff * t) if t < 0.5 else float(b - diff * (1 - t))

    def mean(self) -> float:
        n = self.rows
        return float(int((self.values * self.counts).sum()) / n) if n else 0.0

    def length_histogram(self, max_length: int | None) -> dict[str, list]:
        top = int(self.values[-1]) if len(self.values) else 1
        hi = float(max(max_length or 0, max(top, 1) if len(self.values) else 1))
        counts, edges = _histogram(self.values, 0, hi, LENGTH_BINS, weights=self.counts)
        return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}

    def fraction_histogram(self) -> dict[str, list]:
        edges = _histogram(np.zeros(0), 0.0, 1.0, FRACTION_BINS)[1]
        return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in self.fractions]}

    def figures(self) -> dict[str, float | int]:
        """min, max, mean, p50, p95 as the report lists them. ``min`` is ``lengths.min(initial=0)`` as the
        report has always computed it: 0 for any lengths (kept, so reports stay comparable)."""
        some = bool(len(self.values))
        return {"min": min(0, int(self.values[0])) if some else 0, "max": int(self.values[-1]) if some else 0,
                "mean": self.mean(), "p50": self.percentile(50), "p95": self.percentile(95)}
