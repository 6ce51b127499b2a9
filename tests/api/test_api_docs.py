"""The examples of docs/python-api.md run as written (issue 33): every ```python block, in order,
in one namespace, in an empty folder. A block whose first line is ``# slow`` (training) runs only
in the slow test."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

DOC = ROOT / "docs" / "python-api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> list[str]:
    found = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(found) >= 6, "docs/python-api.md lost its examples"
    return found


def _run(blocks_: list[str], tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks_):
        exec(compile(code, f"{DOC.name}[block {i + 1}]", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace


def test_the_python_api_page_runs(tmp_path, monkeypatch):
    fast = [b for b in blocks() if not b.startswith("# slow")]
    assert len(fast) < len(blocks())  # the training block is there, run by the slow test
    ns = _run(fast, tmp_path, monkeypatch)
    assert ns["summary"].audit.ok and ns["found"].invalid_total == 1
    assert len(ns["encoded"].rows) == 40 and (tmp_path / "out" / "chats" / "manifest.json").is_file()


def test_the_readme_points_to_the_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Python API" in readme and "docs/python-api.md" in readme


@pytest.mark.slow
def test_the_python_api_page_runs_with_training(tmp_path, monkeypatch):
    ns = _run(blocks(), tmp_path, monkeypatch)
    assert ns["trained"].trainer.state.global_step == 2
    assert (tmp_path / "out" / "model" / "data_manifest.json").is_file()
