"""The commands are thin callers of the Python API (issue 33): `run`, `validate` and `audit` do
their work through `sftdata.api`, so the library and the command line cannot drift apart."""

from __future__ import annotations

from click.testing import CliRunner

from sftdata import api
from sftdata.cli import main
from tests.conftest import write_jsonl
from tests.synth import generate_records


def _spy(monkeypatch, name: str) -> list:
    calls: list = []
    real = getattr(api, name)

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(api, name, spy)
    return calls


def test_run_validate_and_audit_go_through_the_api(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "in.jsonl", generate_records(8, seed=31))
    runs, checks, audits = (_spy(monkeypatch, n) for n in ("run", "validate", "audit_data"))
    cli = CliRunner()
    result = cli.invoke(main, ["run", "--input", str(src), "--output", str(tmp_path / "out"), "--workers", "1",
                               "--template", "llama3.1"])
    assert result.exit_code == 0, result.output
    assert len(runs) == 1 and runs[0][1]["inputs"] == [str(src)] and runs[0][0][0].template == "llama3.1"
    assert "OK: every rule holds" in result.output
    result = cli.invoke(main, ["validate", str(src), "--template", "llama3.2"])
    assert result.exit_code == 0 and checks[0][1]["template"] == "llama3.2"
    result = cli.invoke(main, ["audit", str(tmp_path / "out"), "--workers", "1"])
    assert result.exit_code == 0 and audits[0][0] == (str(tmp_path / "out"),)
