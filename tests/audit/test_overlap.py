"""``overlap`` in Arrow gives the report the per-row Python dicts gave (issue 31)."""

from __future__ import annotations

import random
from collections import defaultdict

import pyarrow as pa
import pytest

from sftdata.manifest import read_manifest
from sftdata.overlap import OverlapError, find_overlap
from sftdata.runner import run_pipeline
from tests.conftest import settings, write_jsonl
from tests.synth import generate_records


def old_hashes(folder, prompts):
    """The dict-of-lists the command built before (a copy, for comparison)."""
    out = defaultdict(list)
    single, packed = ("prompt_hash", "prompt_hashes") if prompts else ("content_hash", "content_hashes")
    for name in read_manifest(str(folder)).shard_files:
        with pa.memory_map(str(folder / name)) as src:
            table = pa.ipc.open_stream(src).read_all()
        if "packed_ids" in table.column_names:
            for ids, hashes in zip(table["packed_ids"].to_pylist(), table[packed].to_pylist(), strict=True):
                for rid, h in zip(ids, hashes, strict=True):
                    out[h].append(rid)
        else:
            for rid, h in zip(table["id"].to_pylist(), table[single].to_pylist(), strict=True):
                out[h].append(rid)
    return out


def old_matches(a_dir, b_dir, prompts):
    a, b = old_hashes(a_dir, prompts), old_hashes(b_dir, prompts)
    return [{"hash": h, "a_ids": a[h], "b_ids": b[h]} for h in sorted(a.keys() & b.keys(), key=lambda h: (a[h][0], h))]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("ov")
    rng = random.Random(8)
    base = generate_records(120, seed=8)
    sides = {}
    for side, lo, hi in (("A", 0, 80), ("B", 50, 120)):
        recs = []
        for k in range(160):  # repeats inside each folder too: several ids per hash on both sides
            rec = dict(base[rng.randrange(lo, hi)])
            rec["id"] = f"{side}-{k}"
            recs.append(rec)
        sides[side] = write_jsonl(d / f"{side}.jsonl", recs)
    run_pipeline(settings(chunk_size=16 << 10), [str(sides["A"])], d / "A")
    run_pipeline(settings(chunk_size=16 << 10), [str(sides["B"])], d / "B")
    run_pipeline(settings(packing="bfd", max_length=4096), [str(sides["B"])], d / "P")
    return d


@pytest.mark.parametrize("prompts", [False, True])
@pytest.mark.parametrize("b", ["B", "P"])
def test_same_report_as_the_dicts(folders, b, prompts):
    want = old_matches(folders / "A", folders / b, prompts)
    assert len(want) > 10 and any(len(m["a_ids"]) > 1 and len(m["b_ids"]) > 1 for m in want)
    got = find_overlap(folders / "A", folders / b, prompts)
    assert got.matches == want
    assert find_overlap(folders / b, folders / "A", prompts).matches == old_matches(folders / b, folders / "A", prompts)


def test_a_shard_without_hash_columns_is_refused_in_one_line(folders, tmp_path):
    import shutil

    folder = shutil.copytree(folders / "A", tmp_path / "A")
    name = read_manifest(str(folder)).shard_files[0]
    data = (folder / name).read_bytes()  # in memory: the file is rewritten below
    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all().drop_columns(["content_hash"])
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(OverlapError, match=f"{name}: not a shard of a prepared folder"):
        find_overlap(folder, folders / "B")
