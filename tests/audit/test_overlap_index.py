"""``overlap``'s bucketed match (`sftdata.overlap_index`) equals a plain set intersection.

Keys are built to collide in their low bits (the bucket) and in their first word, hash strings mix
hex digests with other strings and nulls, and the whole command runs with one bucket, two, and
the default, with one row range or several, against the former dict-of-lists computation.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata import overlap_index
from sftdata.overlap import find_overlap
from sftdata.overlap_index import RECORD, hash_keys, intersect
from tests.audit.test_overlap import folders, old_matches  # noqa: F401 - the fixture is used by name

key = st.tuples(st.sampled_from([0, 1, 64, 2**63]), st.integers(0, 3))  # few distinct words: collisions


def records(keys: list[tuple[int, int]], first_row: int = 0) -> np.ndarray:
    out = np.zeros(len(keys), RECORD)
    for i, (k0, k1) in enumerate(keys):
        out[i] = (k0, k1, first_row + i)
    return out


@settings(max_examples=300, deadline=None)
@given(a=st.lists(key, max_size=40), b=st.lists(key, max_size=40))
def test_intersect_is_the_set_intersection_with_rows_in_order(a, b):
    ra, rb = records(a), records(b, 1000)
    rng = np.random.default_rng(len(a) * 41 + len(b))
    ma, mb, shared = intersect(ra[rng.permutation(len(ra))], rb[rng.permutation(len(rb))])
    common = set(a) & set(b)
    assert shared == len(common)
    for m, keys, base in ((ma, a, 0), (mb, b, 1000)):
        want = sorted((k0, k1, base + i) for i, (k0, k1) in enumerate(keys) if (k0, k1) in common)
        assert [(int(x["k0"]), int(x["k1"]), int(x["row"])) for x in m] == want
    firsts = {(int(x["k0"]), int(x["k1"])): int(x["row"]) for x in ma[ma["first"] == 1]}
    assert firsts == {k: min(i for i, kk in enumerate(a) if kk == k) for k in common}
    assert not mb["first"].any()


hashes = st.one_of(st.none(), st.text(max_size=40),
                   st.integers(0, 30).map(lambda i: hashlib.md5(str(i).encode()).hexdigest()),
                   st.integers(0, 30).map(lambda i: hashlib.md5(str(i).encode()).hexdigest().upper()))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(hashes, max_size=30), cut=st.integers(0, 30))
def test_a_hash_has_one_key_whatever_shares_its_shard(values, cut):
    """The same string gets the same key alone or among others, hex or not; different strings differ."""
    whole = hash_keys(pa.array(values, pa.string()))
    parts = [hash_keys(pa.array(values[:cut], pa.string())), hash_keys(pa.array(values[cut:], pa.string()))]
    assert np.array_equal(whole, np.concatenate(parts)) and whole.shape == (len(values), 2)
    seen: dict = {}
    for value, k in zip(values, map(tuple, whole.tolist()), strict=True):
        assert seen.setdefault(k, value) == value
    sliced = pa.array(["x", *values], pa.string()).slice(1)
    assert np.array_equal(hash_keys(sliced), whole)


@pytest.mark.parametrize(("buckets", "ranges"), [(1, 1), (2, 3), (64, 64)])
@pytest.mark.parametrize("b", ["B", "P"])
def test_the_report_is_the_same_for_any_buckets_and_ranges(folders, monkeypatch, buckets, ranges, b):  # noqa: F811
    monkeypatch.setattr(overlap_index, "BUCKETS", buckets)
    monkeypatch.setattr(overlap_index, "RANGES", ranges)
    for prompts in (False, True):
        want = old_matches(folders / "A", folders / b, prompts)
        got = find_overlap(folders / "A", folders / b, prompts)
        assert got.matches == want and got.shared == len(want)
        assert got.a_records == sum(len(m["a_ids"]) for m in want)
        assert got.b_records == sum(len(m["b_ids"]) for m in want)
        for limit in (0, 1, 5):
            first = find_overlap(folders / "A", folders / b, prompts, limit=limit)
            assert first.matches == want[:limit] and first.shared == len(want)
