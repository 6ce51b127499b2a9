"""Shared fixtures: the real tokenizer (cached per session), the reference HF tokenizer, corpora."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray >= 2.5x turns token auth on for a local instance and keeps the token in ~/.ray/auth_token, which
# every Ray process of this user then shares: a cluster one test starts with `ray start` and a driver
# another test launches can disagree about it. The test clusters listen on loopback only.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPUS = ROOT.parent / "shared" / "corpora" / "sft-mix.jsonl"


@pytest.fixture(scope="session")
def tokenizer():
    from sftdata.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def hf_reference():
    """A separate transformers tokenizer object: the reference the parity tests compare against."""
    from transformers import AutoTokenizer

    from sftdata.tokenizer import _convert_builtin

    return AutoTokenizer.from_pretrained(str(_convert_builtin()))


@pytest.fixture(scope="session")
def shared_corpus() -> list[dict]:
    if not SHARED_CORPUS.is_file():
        pytest.skip(f"{SHARED_CORPUS} is not present")
    return [json.loads(line) for line in SHARED_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False))
            f.write("\n")
    return path


def settings(**overrides):
    """Pipeline settings as the tests use them: defaults plus ``overrides``, the run's own audit off."""
    from sftdata.config import settings_from_dict

    s = settings_from_dict({}, overrides=overrides)
    s.audit_enabled = False
    return s


def load(path):
    """A prepared folder through ``datasets.load_from_disk``, as a trainer opens it."""
    from datasets import load_from_disk

    return load_from_disk(str(path))


def sftdata_cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``python -m sftdata.cli ARGS`` in a process of its own (exit codes, signals, real output)."""
    return subprocess.run([sys.executable, "-m", "sftdata.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})})


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path: what a deletion or overwrite test compares."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_committed(*args, **kwargs) -> dict:
    """``run_pipeline(...).manifest``, also for a run that committed nothing usable (no rows):
    such a run raises ``UnusableRunError`` after its commit, carrying the summary."""
    from sftdata.errors import UnusableRunError
    from sftdata.runner import run_pipeline

    try:
        return run_pipeline(*args, **kwargs).manifest
    except UnusableRunError as exc:
        assert exc.summary is not None and exc.summary.manifest["totals"]["rows"] == 0 or \
            exc.summary.manifest["counts"]["rejected"].get("internal_error", 0) > 5
        return exc.summary.manifest


@pytest.fixture(scope="module")
def tok():
    """The built-in tokenizer under the short name the audit tests use."""
    from sftdata.tokenizer import load_tokenizer

    return load_tokenizer("builtin:llama3")


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """(records file, rows) of our own rendering, for the foreign-audit tests (tests/foreign_data.py)."""
    from tests.foreign_data import our_rows

    return our_rows(tmp_path_factory.mktemp("src"))
