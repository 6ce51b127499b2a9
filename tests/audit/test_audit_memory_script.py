"""The audit memory benchmark (issue 28) keeps running: tiny files, its output's shape only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_audit_memory_benchmark_runs_on_small_files():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "audit_foreign_memory.py"), "--gb", "0.005"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["big.arrow", "big.parquet"]
    assert all("exit 0" in ln and "peak RSS" in ln and "OK: every rule holds" in ln for ln in lines), lines
