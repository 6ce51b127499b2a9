"""``benchmarks/ray_two_node.py`` on a small input: the two-node cluster it starts runs the job on
both nodes, the Ray output equals the local executor's byte for byte, and nothing of the cluster
outlives the script. Figures are not checked (a shared machine makes them noise)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.synth import generate_records, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "ray_two_node.py"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_two_nodes_run_tasks_and_match_local(tmp_path: Path) -> None:
    corpus = tmp_path / "in.jsonl"
    write_jsonl(corpus, generate_records(300, seed=5))
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(SCRIPT), "--copies", "1", "--corpus", str(corpus),
                          "--chunk-size", "16384", "--work", str(tmp_path / "work"), "--json", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "identical" in res.stdout and "both nodes ran tasks" in res.stdout, res.stdout
    got = json.loads(out.read_text())
    size = got["sizes"][0]
    assert got["ok"] and size["differences"] == [] and size["files"] > 2
    by_node = size["ray"]["tasks_by_node"]  # from the cluster's own task events
    assert isinstance(by_node, dict) and sorted(by_node) == ["head", "node2"], by_node
    assert all(n >= 1 for n in by_node.values()) and sum(by_node.values()) >= size["chunks"], by_node
    assert size["ray"]["driver_peak_rss"] > 0 and size["local"]["tree_peak_rss"] > 0
    # the cluster is gone: its `ray start` processes, anything running under its temp folder, the folder
    cluster = got["cluster"]
    alive = [p for p in cluster["pids"] if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, alive
    left = []
    for p in psutil.process_iter(["cmdline"]):
        if any(cluster["temp_dir"] in arg for arg in p.info["cmdline"] or []):
            left.append(p.pid)
    assert not left, left
    assert not Path(cluster["temp_dir"]).exists()
