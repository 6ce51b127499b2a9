"""``sftdata train`` on a split run's folder: trains on train/, reports the eval split's loss (issue 30)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import sftdata_cli
from tests.mix.recipe_data import build

pytestmark = pytest.mark.slow


def test_train_on_a_split_run_reports_an_eval_loss(tmp_path):
    data = tmp_path / "mix"
    r = sftdata_cli("run", build(tmp_path), "--output", data, "--workers", "2", "--no-audit")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "model"
    r = sftdata_cli("train", data, "--model", "builtin:tiny-llama3", "--output-dir", out, "--max-steps", "2",
                    "--batch-size", "2", "--seed", "0", "--skip-audit", "--set", "save_strategy=no",
                    "--set", "per_device_eval_batch_size=4", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    evals = json.loads((data / "eval" / "manifest.json").read_text())["totals"]["rows"]
    assert f"over {evals} eval rows" in r.stdout + r.stderr
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_loss"] > 0
