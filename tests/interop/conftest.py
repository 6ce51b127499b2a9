"""Prepared folders shared by the interop tests: one plain (truncated rows), one packed."""

from __future__ import annotations

import pytest

from tests.interop.harness import make_prepared


@pytest.fixture(scope="session")
def plain_run(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("interop"), "plain", packed=False)


@pytest.fixture(scope="session")
def packed_run(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("interop"), "packed", packed=True)
