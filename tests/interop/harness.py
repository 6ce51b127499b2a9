"""Shared by the export tests and the interop suite: the varied corpus, the expected loss pairs, the venvs.

Why: every export is checked the same way — the set of (row, position, target token) that reach
the loss, as the trainer's code sees them, must equal the set read straight from our prepared
shards. The expected set is computed here from the Arrow shards with pyarrow alone, never with
the export code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.synth import generate_records

VENVS = Path(os.environ.get("SFTDATA_VENVS", "/root/.cache/sftdata-venvs"))
SCRIPTS = Path(__file__).resolve().parent / "scripts"
Pair = tuple[int, int, int]


def corpus_records(n: int = 160, seed: int = 17) -> list[dict]:
    """Multi-turn, weight-0 turns and tool calls (from synth), plus long records that get truncated."""
    records = generate_records(n, seed=seed, tools=True)
    long_text = " ".join(f"word{i}" for i in range(400))
    for i in range(4):
        records.append({"id": f"long-{i}", "messages": [
            {"role": "user", "content": "Summarise: " + long_text},
            {"role": "assistant", "content": "Short reply."},
            {"role": "user", "content": "More?"},
            {"role": "assistant", "content": long_text}]})
    return records


def make_prepared(tmp: Path, name: str, *, packed: bool, n: int = 160, seed: int = 17) -> Path:
    """A finished `sftdata run` folder: max_length 256 with truncation (plain) or 1024 packed (bfd)."""
    from click.testing import CliRunner

    from sftdata.cli import main
    from tests.synth import write_jsonl

    data = tmp / f"{name}.jsonl"
    write_jsonl(data, corpus_records(n, seed))
    out = tmp / name
    args = ["run", "--input", str(data), "--output", str(out), "--workers", "1", "--truncation", "truncate",
            "--shard-size", "48KB", "--max-length", "1024" if packed else "256"]
    if packed:
        args += ["--packing", "bfd"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def read_prepared(folder: Path) -> list[dict]:
    """Every row of the prepared folder, in order, as numpy arrays."""
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = []
    for entry in manifest["shards"]:
        with pa.memory_map(str(folder / entry["file"])) as f:
            table = pa.ipc.open_stream(f).read_all()
        cols = table.to_pydict()
        for i in range(table.num_rows):
            ids = np.array(cols["input_ids"][i])
            rows.append({"input_ids": ids, "labels": np.array(cols["labels"][i]),
                         "seq_lengths": list(cols["seq_lengths"][i]) if "seq_lengths" in cols else [len(ids)]})
    return rows


def conversations(folder: Path) -> list[dict]:
    """The prepared rows split into conversations (a packed row gives one per ``seq_lengths`` entry)."""
    out = []
    for row in read_prepared(folder):
        start = 0
        for n in row["seq_lengths"]:
            out.append({"input_ids": row["input_ids"][start:start + n], "labels": row["labels"][start:start + n]})
            start += n
    return out


def expected_pairs(folder: Path, *, per_conversation: bool) -> set[Pair]:
    """(row, position, token) for every trained label of the prepared folder; rows are conversations
    when ``per_conversation`` (an unpacked export of a packed folder), else the prepared rows."""
    rows = conversations(folder) if per_conversation else read_prepared(folder)
    pairs = set()
    for r, row in enumerate(rows):
        for p in np.flatnonzero(row["labels"] != -100):
            pairs.add((r, int(p), int(row["labels"][p])))
    return pairs


def conversation_starts(folder: Path) -> list[list[int]]:
    """Per prepared row, where each conversation starts."""
    return [list(np.concatenate([[0], np.cumsum(r["seq_lengths"])[:-1]]).astype(int))
            for r in read_prepared(folder)]


def venv_python(name: str) -> Path:
    """The trainer venv's python; skips when it is absent unless SFTDATA_INTEROP=1 (then fails)."""
    py = VENVS / name / "bin" / "python"
    if not (VENVS / name / ".ok").is_file() or not py.is_file():
        msg = f"trainer venv {name!r} not built (tests/interop/build_venvs.sh {name})"
        if os.environ.get("SFTDATA_INTEROP") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return py


def run_in_venv(name: str, script: str, *args: str, timeout: int = 600) -> dict:
    """Run ``scripts/<script>`` with the trainer venv's python; returns the JSON it writes."""
    py = venv_python(name)
    out = Path(args[-1])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # our package, for sftdata.integrations
    env["TOKENIZERS_PARALLELISM"] = "false"
    res = subprocess.run([str(py), str(SCRIPTS / script), *args], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert res.returncode == 0, f"{script} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return json.loads(out.read_text())


def as_pairs(items: list[list[int]]) -> set[Pair]:
    return {(int(r), int(p), int(t)) for r, p, t in items}
