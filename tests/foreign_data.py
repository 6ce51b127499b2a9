"""Shared by the tests of auditing data without a manifest (issue 18): generated records, our
own rendering of them, writers for each file type, and the CLI run with its JSON report."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from sftdata.audit.command import audit_cmd
from sftdata.process.rerender import render_source_rows
from tests.conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "schemas" / "audit-report.schema.json").read_text())
MANIFEST_ONLY = ("shard_integrity", "manifest_counts", "tokenizer_fingerprint", "max_length", "max_rejected_fraction")


def records(n: int = 6) -> list[dict]:
    rng = np.random.default_rng(18)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "seven"]
    out = []
    for i in range(n):
        q = " ".join(rng.choice(words, size=int(rng.integers(2, 6))))
        a = " ".join(rng.choice(words, size=int(rng.integers(1, 8)))).capitalize() + "."
        msgs = [{"role": "user", "content": f"Question {i}: {q}?"}, {"role": "assistant", "content": a}]
        if i % 2:
            msgs = [{"role": "system", "content": "Answer in one line."}, *msgs,
                    {"role": "user", "content": "And again?"}, {"role": "assistant", "content": a.upper()}]
        out.append({"id": f"rec-{i}", "messages": msgs})
    return out


def our_rows(folder: Path) -> tuple[Path, list[dict]]:
    """Our own llama3.2 rendering of ``records()``: (source JSONL, rows with id, input_ids, labels)."""
    src = write_jsonl(folder / "records.jsonl", records())
    rows = [{"id": rid, "input_ids": [int(x) for x in ids], "labels": [int(x) for x in lab]}
            for rid, ids, lab in render_source_rows([str(src)], {"pipeline": {"template": "llama3.2"}})]
    return src, rows


def write(path: Path, rows: list[dict]) -> Path:
    """Rows as the file type the suffix names (Parquet, JSON Lines, Arrow IPC file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    table = pa.Table.from_pylist(rows)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    return path


def audit(path: Path | str, *args: str) -> tuple[int, dict, str]:
    with tempfile.TemporaryDirectory(prefix="audit-report-") as tmp:  # outside the audited data, removed after
        out = Path(tmp) / "report.json"
        result = CliRunner().invoke(audit_cmd, [str(path), "--json", str(out), *args])
        assert result.exit_code in (0, 1), result.output + repr(result.exception)
        report = json.loads(out.read_text())
    jsonschema.validate(report, SCHEMA)
    return result.exit_code, report, result.output


def failed(report: dict) -> set[str]:
    return {r["name"] for r in report["rules"] if r["status"] == "fail"}


def hits(report: dict, rule: str) -> list[dict]:
    return [v for v in report["violations"] if v["rule"] == rule]
