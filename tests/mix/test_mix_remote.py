"""A mix into an object store (S3 on loopback, moto): the same bytes as a local run; verify reads it."""

from __future__ import annotations

import importlib.util

import pytest

from sftdata.storage import Folder
from tests.conftest import sftdata_cli, snapshot
from tests.mix.recipe_data import build
from tests.run.test_remote import s3  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("moto") is None, reason="moto is not installed")]


def test_mix_into_s3_matches_a_local_run(s3, tmp_path):  # noqa: F811 - the fixture
    recipe = build(tmp_path)
    local = tmp_path / "local"
    r = sftdata_cli("run", recipe, "--output", local, "--workers", "2", "--no-audit")
    assert r.returncode == 0, r.stderr
    uri = s3("mix-out")
    r = sftdata_cli("run", recipe, "--output", uri, "--workers", "2", "--no-audit")
    assert r.returncode == 0, r.stderr
    remote = Folder(uri)
    assert {name: remote.read_bytes(name) for name in remote.listing()} == snapshot(local)
    r = sftdata_cli("verify", uri)
    assert r.returncode == 0 and "split eval" in r.stdout, r.stdout + r.stderr
