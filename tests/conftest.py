"""Shared fixtures: the real tokenizer (cached per session), the reference HF tokenizer, corpora."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

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
