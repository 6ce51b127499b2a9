"""The audit's row pass on worker processes gives the same report as on one (``audit/shards.py``):
same violations in the same order, same caps, same date findings, same counts and stats."""

from __future__ import annotations

import json
import random

import pytest

from sftdata.audit import run_audit
from sftdata.audit.shards import audit_workers
from sftdata.storage import Folder
from tests.audit.test_audit import _variant, make_rows, render, write_folder

VARIANTS = ["labels_length", "token_range", "extra_bos", "no_bos", "unknown_role", "no_newline",
            "tail_after_eot", "train_bos", "train_newline"]


def _dated(tok, i: int, date: str) -> dict:
    system = f"Cutting Knowledge Date: December 2023\nToday Date: {date}\n\nYou are a helpful assistant."
    ids, labels = render(tok, [("system", system), ("user", f"question {i}"), ("assistant", f"answer {i}")])
    return {"id": f"dated-{i}", "input_ids": ids, "labels": labels, "content_hash": f"{i:064x}"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tok):
    """14 shards mixing clean rows, every corruption of ``_variant`` and system headers with three
    different dates, in a seeded order."""
    rows = make_rows(tok)
    rng = random.Random(7)
    pool = [dict(r) for r in rows.values() if r["id"] != "conv-trunc"]
    shards = []
    n = 0
    for s in range(14):
        shard = []
        for _ in range(rng.randrange(3, 9)):
            kind = rng.random()
            if kind < 0.4:
                row = dict(rng.choice(pool))
            elif kind < 0.7:
                row = _variant(tok, rows, rng.choice(VARIANTS))
            else:
                row = _dated(tok, n, rng.choice(["26 Jul 2024", "26 Jul 2024", "02 Dec 2026", "01 Jan 2025"]))
            n += 1
            shard.append(dict(row, id=f"{row['id']}-{s}-{n}"))
        shards.append(shard)
    return write_folder(tmp_path_factory.mktemp("parallel") / "hostile", tok, shards, truncated=[])


def _report(folder, **kw) -> dict:
    return run_audit(folder, **kw).to_json()  # no timing in it: comparable byte for byte


def _status(report: dict) -> dict[str, str]:
    return {r["name"]: r["status"] for r in report["rules"]}


@pytest.mark.parametrize("max_per_rule", [1, 3, 1000])
def test_worker_processes_give_the_serial_report(hostile, max_per_rule):
    serial = _report(hostile, workers=1, max_per_rule=max_per_rule)
    failing = [name for name, status in _status(serial).items() if status == "fail"]
    assert "date_consistent" in failing and len(failing) >= 6, failing
    assert serial["violations_total"] > serial["violations_listed"] or max_per_rule == 1000
    for workers in (2, 3):
        assert json.dumps(_report(hostile, workers=workers, max_per_rule=max_per_rule)) == json.dumps(serial)


def test_an_unreadable_shard_is_reported_alike(hostile, tmp_path):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(hostile, folder)
    (folder / "shard-000005-00.arrow").write_bytes(b"not arrow at all")
    for integrity in (True, False):
        serial = _report(folder, workers=1, check_integrity=integrity)
        assert _status(serial)["shard_integrity"] == "fail"  # corrupt, or (unchecked) unreadable
        assert json.dumps(_report(folder, workers=2, check_integrity=integrity)) == json.dumps(serial)


def test_worker_count(tmp_path, hostile):
    assert audit_workers(Folder(hostile), 14, 3) == 3
    assert audit_workers(Folder(hostile), 1, 4) == 1
    assert audit_workers(Folder(hostile), 14, 50) == 8
    assert 1 <= audit_workers(Folder(hostile), 14, None) <= 8


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cap_lists_the_first_violations_of_the_whole_folder(hostile, workers):
    """With ``max_per_rule`` k each rule lists exactly the first k of what it lists uncapped, in
    folder order: the per-shard sinks are cut as one sink over every shard would be."""
    full = _report(hostile, workers=workers, max_per_rule=1000)["violations"]
    for cap in (1, 3):
        capped = _report(hostile, workers=workers, max_per_rule=cap)["violations"]
        for rule in {v["rule"] for v in full}:
            want = [v for v in full if v["rule"] == rule][:cap]
            assert [v for v in capped if v["rule"] == rule] == want, rule
