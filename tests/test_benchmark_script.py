"""The benchmark script must keep running as the package changes: a broken benchmark is found when
someone needs the numbers, which is too late. Only its shape is checked, never its timings: a
shared CI machine would make any speed assertion flaky."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_prepare.py"

ROWS = (
    "(a) TRL SFTTrainer prep",
    "(b) HF encode_batch",
    "(L) limit: tiktoken x 2 processes",
    "(LS) limit: splintr x 2 processes",
    "token check: limit splintr",
    "run vs the limit with splintr (LS)",
    "copies    : copy k appends ' [k]'",
    "(c) sftdata run --workers 2",
    "start-up of (c): sftdata run on 50 records",
    "token check: limit",
    "per-stage profile of one worker",
    "run >= 1.0x the limit (L) tokens/s",
    "token check: encode_batch",
    "memory growth 4x input",
    "run >= 10x TRL prep tokens/s",
    "run >= 2.5x encode_batch tokens/s",
    "memory growth at 4x input <= 1.25x",
    "audit >= 10x faster than run",
    "run 1 -> 2 workers >= 1.8x faster",
)


@pytest.mark.slow
def test_quick_benchmark_prints_every_row() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--scaling"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    for row in ROWS:
        assert row in out, f"missing {row!r} in:\n{out}"
    assert "error:" not in out, out
    assert "token check: encode_batch" in out and "-> OK" in out, out
    assert "token check: limit" in out and out.count("-> OK") == 3, out
    assert "MISMATCH" not in out, out
    assert out.count(" L, run is ") == 1 and " LS (tokens/s" in out, out
    for stage in ("read+parse", "validate", "render", "encode (BPE)", "labels", "hash", "write"):
        assert f"    {stage} " in out, out
    assert out.count("PASS") + out.count("FAIL") + out.count("SKIP") == 6, out
    assert "1 -> 2 workers: (c)" in out, out
