"""The command line: every command has help with an example; exit codes; errors in plain words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sftdata.cli import main
from tests.conftest import sftdata_cli as run_cli
from tests.conftest import write_jsonl
from tests.synth import generate_records

ROOT = Path(__file__).resolve().parents[2]


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0 and "Example" in res.output
    expected = {"run", "validate", "audit", "verify", "inspect", "train", "overlap"}
    names = main.list_commands(None)
    assert expected <= set(names), names
    for name in names:
        res = runner.invoke(main, [name, "--help"])
        assert res.exit_code == 0, name
        assert "Example" in res.output and "sftdata " + name in res.output, name


def test_validate_exit_codes_and_error_lines(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", generate_records(10, seed=1))
    res = run_cli("validate", str(good))
    assert res.returncode == 0, res.stderr
    assert "10 records checked, 10 valid, 0 invalid" in res.stderr
    bad = write_jsonl(tmp_path / "bad.jsonl", [generate_records(1)[0],
                                                {"messages": [{"role": "robot", "content": "x"}]},
                                                '{"messages": [}'])
    res = run_cli("validate", str(bad))
    assert res.returncode == 1
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2
    assert f"{bad}:2" in lines[0] and "/messages/0/role" in lines[0] and '"robot"' in lines[0]
    assert "expected one of" in lines[0]
    assert f"{bad}:3" in lines[1] and "invalid_json" in lines[1]
    res = run_cli("validate", str(tmp_path / "missing.jsonl"))
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_run_end_to_end_with_globs_and_summary(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", generate_records(20, seed=2))
    write_jsonl(tmp_path / "b.jsonl", generate_records(20, seed=3) + ['{"broken'])
    out = tmp_path / "out"
    res = run_cli("run", "pipelines/llama3.1.yaml", "--input", str(tmp_path / "*.jsonl"), "--output", str(out),
                  "--workers", "2", "--no-audit")
    assert res.returncode == 0, res.stderr
    assert "rows written" in res.stdout and "invalid_json" in res.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["records_read"] == 41 and manifest["pipeline"]["template"] == "llama3.1"
    again = run_cli("run", "pipelines/llama3.1.yaml", "--input", str(tmp_path / "a.jsonl"), "--output", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr and "--overwrite" in again.stderr
    assert json.loads((out / "manifest.json").read_text()) == manifest


@pytest.mark.parametrize("args,words", [
    (["--input", "nope/*.jsonl"], "matched no file"),
    (["--input", "missing.jsonl"], "does not exist"),
    (["--input", "examples/demo.jsonl", "--shard-size", "lots"], "not a size"),
])
def test_run_errors_are_plain(tmp_path, args, words):
    res = run_cli("run", *args, "--output", str(tmp_path / "o"))
    assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr


def test_bad_pipeline_lists_every_problem(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("stages:\n  render: {template: gpt4}\n  write: {shard_size: huge, colour: 1}\n")
    res = run_cli("run", str(p), "--input", "examples/demo.jsonl", "--output", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "gpt4" in res.stderr and "colour" in res.stderr and "3 problem(s)" in res.stderr


def test_ids_cannot_steer_output_file_names(tmp_path):
    recs = generate_records(3, seed=9)
    recs[0]["id"] = "../../escape"
    recs[1]["id"] = "/etc/passwd"
    src = write_jsonl(tmp_path / "a.jsonl", recs)
    out = tmp_path / "o"
    res = run_cli("run", "--input", str(src), "--output", str(out), "--no-audit")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "o"]
    assert all(p.parent == out for p in out.rglob("*"))
