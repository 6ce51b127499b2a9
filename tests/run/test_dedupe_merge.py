"""``dedupe: exact`` planned by an external merge of sorted runs drops exactly what the old
dict of every hash dropped, for any number of workers (issue 31)."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from sftdata.executors import get_executor
from sftdata.process.chunk import hash_chunk
from sftdata.process.dedupe import DuplicatePlan, RowIndex, sorted_hashes
from sftdata.process.record import RecordProcessor
from sftdata.process.tasks import RenderChunk
from sftdata.runner import _find_duplicates, _plan
from tests.conftest import settings
from tests.synth import generate_records


def old_find_duplicates(chunks, s) -> dict[int, dict[int, str]]:
    """The driver-side dict the runner used before (a copy, for comparison)."""
    per_chunk = {c.index: hash_chunk(c, s, RecordProcessor(s)) for c in chunks}
    first: dict[str, str] = {}
    drops: dict[int, dict[int, str]] = {}
    for chunk in chunks:
        for line, h, rid in per_chunk[chunk.index]:
            if h in first:
                drops.setdefault(chunk.index, {})[line] = first[h]
            else:
                first[h] = rid
    return drops


@pytest.fixture(scope="module")
def many_duplicates(tmp_path_factory):
    rng = random.Random(31)
    base = generate_records(150, seed=31)
    lines = []
    for i in range(2500):
        rec = dict(rng.choice(base))
        rec["id"] = f"r{i}"  # ids differ; content repeats (about 94% of records are duplicates)
        lines.append(orjson.dumps(rec) if i % 97 else b'{"messages": "broken"}')
    path = tmp_path_factory.mktemp("dd") / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("pass_", ["hash", "render"])
def test_merge_drops_what_the_dict_dropped(many_duplicates, workers, pass_, tmp_path):
    s = settings(dedupe="exact", chunk_size=16 << 10)
    _, chunks, _ = _plan(s, [str(many_duplicates)])
    assert len(chunks) > 8
    old = old_find_duplicates(chunks, s)
    assert sum(len(d) for d in old.values()) > 2000
    (tmp_path / "_chunks").mkdir()
    done = frozenset(c.index for c in chunks) if pass_ == "hash" else frozenset()  # a resume's chunks: hashed
    task = RenderChunk(s, str(tmp_path), attempt="a", done=done)
    new = _find_duplicates(chunks, get_executor("local", workers), task)
    assert new == old


def test_runs_may_arrive_in_any_order():
    runs = {0: [(1, "h1", "a"), (2, "h2", "b"), (3, "h1", "c")], 1: [(1, "h2", "d"), (2, "h3", "e"), (5, "h1", "f")]}
    with DuplicatePlan() as plan:
        for index in (1, 0):
            plan.add_hashes(index, sorted_hashes(runs[index]))
        assert plan.drops() == {0: {3: "a"}, 1: {1: "b", 5: "a"}}


def test_row_index_lists_what_the_dict_and_counter_listed():
    """The commit's duplicates and repeated ids, against the driver-side dict and Counter used before."""
    rng = random.Random(5)
    names = ["a", "b\tc", "é\n", "zz", "\x00", "日本", "a "]
    rows = {c: [(f"{rng.randrange(60):032x}", rng.choice(names) if rng.random() < 0.3 else f"id-{c}-{i}")
                for i in range(rng.randrange(0, 80))] for c in range(7)}
    seen: dict[str, str] = {}
    old_dups = []
    for c in range(7):
        for h, rid in rows[c]:
            if h in seen:
                old_dups.append((rid, seen[h]))
            else:
                seen[h] = rid
    ids = Counter(rid for c in range(7) for _, rid in rows[c])
    with RowIndex() as index:
        for c in (3, 0, 6, 1, 5, 2, 4):
            index.add(c, rows[c])
        new_dups = list(index.duplicates())
        assert sorted(new_dups) == sorted(old_dups) and len(new_dups) > 100
        assert list(index.repeated_ids()) == sorted(rid for rid, n in ids.items() if n > 1)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_spills_its_bookkeeping_and_leaves_no_temporary_file(many_duplicates, tmp_path, monkeypatch, workers):
    import tempfile

    from sftdata.runner import run_pipeline

    spill = tmp_path / "tmp"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    made = []
    real = tempfile.TemporaryDirectory

    def spy(*a, **kw):
        made.append(kw.get("prefix"))
        return real(*a, **kw)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", spy)
    m = run_pipeline(settings(dedupe="exact", chunk_size=16 << 10), [str(many_duplicates)], tmp_path / "o",
                     workers=workers).manifest
    assert m["counts"]["rejected"]["duplicate"] == m["counts"]["duplicate_records"] > 2000
    assert {"sftdata-dedupe-", "sftdata-drops-", "sftdata-hashes-", "sftdata-ids-"} <= set(made)
    assert list(spill.iterdir()) == []


@pytest.mark.parametrize("dedupe", ["exact", "none"])
def test_killed_run_resumes_with_the_same_lists(many_duplicates, tmp_path, dedupe):
    """The dropped rows and duplicates of chunks committed before a kill come back from their done-markers."""
    import os
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    twins = [orjson.dumps({"id": "same", "messages": [{"role": "user", "content": f"only {k}"},
                                                      {"role": "assistant", "content": "ok"}]}) for k in (1, 2)]
    src.write_bytes(b"\n".join([twins[0], many_duplicates.read_bytes().rstrip(b"\n"), twins[1]]) + b"\n")
    args = ["run", "--input", str(src), "--chunk-size", "16KiB", "--no-audit", "--dedupe", dedupe]

    def cli(out, *extra, env=None):
        return subprocess.run([sys.executable, "-m", "sftdata.cli", *args, "--output", str(out), *extra],
                              capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)

    assert cli(tmp_path / "ref", "--workers", "2").returncode == 0
    assert cli(tmp_path / "o", "--workers", "2", env={"SFTDATA_FAULT": "chunk_done:5"}).returncode != 0
    resumed = cli(tmp_path / "o", "--workers", "1", "--resume")
    assert resumed.returncode == 0 and "resumed from a previous run" in resumed.stdout, resumed.stderr
    for name in ("manifest.json", "duplicates.jsonl", "repeated_ids.jsonl", "quarantine.jsonl"):
        assert (tmp_path / "o" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert (tmp_path / "o" / "repeated_ids.jsonl").read_bytes() == b'{"id":"same"}\n'
    assert len((tmp_path / "o" / "duplicates.jsonl").read_bytes().splitlines()) > 2000
