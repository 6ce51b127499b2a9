"""Prepared folders with skewed row lengths for the batching tests, made by `sftdata run`.

Generated records (`tests.synth`), every `long_every`-th one with its assistant replies repeated
`repeat` times, so that a few rows are several times longer than the rest (real chat data is skewed
like that). The folder is what `sftdata run` writes: shards, manifest, ids.
"""

from __future__ import annotations

import copy
from pathlib import Path

from click.testing import CliRunner

from sftdata.cli import main
from tests.conftest import write_jsonl
from tests.synth import generate_records


def skewed_records(n: int, seed: int = 0, long_every: int = 7, repeat: int = 6) -> list[dict]:
    records = generate_records(n, seed=seed, tools=False)
    out = []
    for i, rec in enumerate(records):
        rec = copy.deepcopy(rec)
        if i % long_every == 0:
            for m in rec["messages"]:
                if m["role"] == "assistant" and isinstance(m.get("content"), str):
                    m["content"] = " ".join([m["content"]] * repeat)
        out.append(rec)
    return out


def prepare(tmp: Path, records: list[dict], name: str = "data", *extra: str) -> Path:
    """`sftdata run` over ``records`` into ``tmp/name``; ``extra`` are more `sftdata run` flags."""
    src = write_jsonl(tmp / f"{name}.jsonl", records)
    out = tmp / name
    result = CliRunner().invoke(main, ["run", "--input", str(src), "--output", str(out), "--workers", "1",
                                       "--no-audit", "--max-length", "4096", *extra])
    assert result.exit_code == 0, result.output
    return out
