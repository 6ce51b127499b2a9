"""The audit lets go of each slice's mapped pages and of Arrow's pool per shard, and the report does not change."""

from __future__ import annotations

import pytest

from sftdata.audit import arrays, shards
from sftdata.audit.run import run_audit
from tests.interop.harness import make_prepared


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("release"), "run1", packed=False, n=60)


@pytest.mark.parametrize("packed", [False, True])
def test_pages_are_let_go_after_every_slice(tmp_path, monkeypatch, folder, packed):
    data = make_prepared(tmp_path, "p", packed=True, n=60) if packed else folder
    whole = run_audit(data, workers=1).to_json()
    calls = {"pages": 0, "pool": 0}
    real_pages, real_pool = shards.release_pages, shards.release_arrow_memory

    def pages(mapped):
        calls["pages"] += 1
        real_pages(mapped)

    def pool():
        calls["pool"] += 1
        real_pool()

    monkeypatch.setattr(shards, "release_pages", pages)
    monkeypatch.setattr(shards, "release_arrow_memory", pool)
    monkeypatch.setattr(arrays, "CHUNK_TOKENS", 512)  # several slices per shard
    report = run_audit(data, workers=1)
    n_shards = report.stats["shards"]
    assert report.to_json() == whole  # slices of any size: the same figures and findings
    assert calls["pages"] > 2 * n_shards  # one per slice, and one per shard at its end
    assert calls["pool"] == calls["pages"]  # Arrow's pool as often


def test_a_shard_of_many_batches_is_sliced_as_one(folder, monkeypatch):
    """Row lengths come from each batch's offsets (no joined copy of the shard); the slices are the same."""
    import numpy as np
    import pyarrow as pa

    from sftdata.audit.integrity import map_shard, open_output

    table, _ = map_shard(open_output(folder), sorted(p.name for p in folder.glob("shard-*.arrow"))[0])
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=3))
    assert chunked.column("input_ids").num_chunks > 2
    one = list(arrays.iter_slices(table, False, 300))
    seen = []
    real = arrays.list_parts
    monkeypatch.setattr(arrays, "list_parts", lambda col: seen.append(len(col)) or real(col))
    many = list(arrays.iter_slices(chunked, False, 300))
    assert max(seen) < table.num_rows  # slices only: the whole column is never joined
    assert [first for first, _ in one] == [first for first, _ in many] and len(one) > 2
    for (_, a), (_, b) in zip(one, many, strict=True):
        for name in ("input_ids", "labels"):
            assert all(np.array_equal(x, y) for x, y in zip(a[name], b[name], strict=True))
        assert a["id"].equals(b["id"])
