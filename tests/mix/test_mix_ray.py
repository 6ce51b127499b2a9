"""A mix on the Ray executor writes the same bytes as on the local pool (issue 30)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import sftdata_cli, snapshot
from tests.mix.recipe_data import build

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")]
LOOPBACK_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def test_mix_on_ray_matches_local(tmp_path):
    recipe = build(tmp_path)
    local, ray = tmp_path / "local", tmp_path / "ray"
    r = sftdata_cli("run", recipe, "--output", local, "--workers", "2", "--no-audit")
    assert r.returncode == 0, r.stderr
    r = sftdata_cli("run", recipe, "--output", ray, "--workers", "2", "--no-audit", "--executor", "ray",
                    env=LOOPBACK_ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    assert snapshot(ray) == snapshot(local)
