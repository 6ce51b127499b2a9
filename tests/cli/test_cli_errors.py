"""One error policy for every command (``sftdata.cli.SftdataGroup`` with ``sftdata.errors.exit_status``):
the same exception gives the same exit code and one line, whichever command met it."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import sftdata.audit.inspect  # noqa: F401 - bind their `from ... import` of the patched functions
import sftdata.audit.prepared  # noqa: F401   before any test patches them, never to a stand-in
from sftdata.cli import main
from sftdata.cli_errors import SftdataCommand
from sftdata.errors import AuditError, ExportError, InterruptedRun, SftdataError, UsageError, exit_status


def _commands(tmp_path) -> dict[str, tuple[str, list[str]]]:
    """command -> (the library function it calls first, patched to raise; its arguments)."""
    folder = tmp_path / "folder"
    folder.mkdir(exist_ok=True)
    data = tmp_path / "in.jsonl"
    data.write_text('{"messages": []}\n')
    out = str(tmp_path / "out")
    return {
        "run": ("sftdata.runner.run_pipeline", ["--input", str(data), "--output", out]),
        "validate": ("sftdata.config.load_pipeline", [str(data)]),
        "audit": ("sftdata.audit.run.run_audit", [str(folder)]),
        "verify": ("sftdata.audit.integrity.verify_folder", [str(folder)]),
        "inspect": ("sftdata.audit.integrity.load_manifest", [str(folder)]),
        "train": ("sftdata.training.launcher.train", [str(folder), "--model", "m", "--output-dir", out]),
        "plan": ("sftdata.planning.plan.make_plan", [str(folder)]),
        "overlap": ("sftdata.overlap.find_overlap", [str(folder), str(folder)]),
        "export": ("sftdata.export.core.export_folder", [str(folder), "--to", "hf", "--output", out]),
    }


COMMANDS = ["run", "validate", "audit", "verify", "inspect", "train", "plan", "overlap", "export"]
CASES = [
    (OSError(errno.ENOSPC, "No space left on device", "/data/shard.arrow"), 1, "disk full: /data/shard.arrow"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/data/x"), 1, "disk quota exceeded: /data/x"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/in"), 2, "Permission denied: /data/in"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/gone"), 2, "No such file or directory: /data/gone"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro"), 2, "Read-only file system: /mnt/ro"),
    (UsageError("the call is wrong"), 2, "the call is wrong"),
    (AuditError("cannot audit this"), 2, "cannot audit this"),
    (ExportError("cannot export this"), 2, "cannot export this"),
    (SftdataError("the work failed"), 1, "the work failed"),
    (InterruptedRun("stopped"), 130, "stopped"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (MemoryError(), 1, "out of memory"),
]


@pytest.mark.parametrize("exc,code,line", CASES, ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None)
def test_the_policy(exc, code, line):
    assert exit_status(exc) == (code, line)


def test_every_command_is_covered(tmp_path):
    assert sorted(COMMANDS) == sorted(main.list_commands(None)) == sorted(_commands(tmp_path))
    assert all(isinstance(main.get_command(None, name), SftdataCommand) for name in COMMANDS)


def test_a_bug_is_not_an_expected_error():
    assert exit_status(ValueError("a bug")) is None and exit_status(KeyError("x")) is None


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("exc,code,line", CASES, ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None)
def test_every_command_maps_errors_the_same_way(tmp_path, monkeypatch, command, exc, code, line):
    target, args = _commands(tmp_path)[command]

    def fail(*_a, **_k):
        raise exc

    monkeypatch.setattr(target, fail)
    runner = CliRunner()
    res = runner.invoke(main, [command, *args])
    alone = runner.invoke(main.get_command(None, command), args)  # the command object on its own, as tests call it
    assert (alone.exit_code, alone.output) == (res.exit_code, res.output)
    lines = res.output.strip().splitlines()
    assert res.exit_code == code, (res.output, res.exception)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.output, res.output
    if command == "run" and isinstance(exc, KeyboardInterrupt):  # a run says how to continue
        assert "interrupted" in lines[0] and "--resume" in lines[0], lines
    elif command == "export" and isinstance(exc, KeyboardInterrupt):  # an export says what OUT holds now
        assert lines[0].startswith("Error: interrupted; ") and "as it was before this export" in lines[0], lines
    else:
        assert lines[0] == f"Error: {line}", lines


def test_a_bug_still_shows_its_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr("sftdata.audit.run.run_audit", lambda *a, **k: {}["missing"])
    res = CliRunner().invoke(main, ["audit", str(tmp_path)])
    assert isinstance(res.exception, KeyError)


SLOW_VERIFY = """
import sys, time
import sftdata.audit.integrity as integrity
import sftdata.audit.inspect  # noqa: F401 - bind their `from ... import` of the patched functions
import sftdata.audit.prepared  # noqa: F401   before any test patches them, never to a stand-in
from sftdata.cli import main
from sftdata.cli_errors import SftdataCommand

def slow(*a, **k):
    print("started", flush=True)
    time.sleep(60)

integrity.verify_folder = slow
main(["verify", sys.argv[1]], prog_name="sftdata")
"""


def test_sigterm_ends_any_command_like_ctrl_c(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_VERIFY, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip() == "Error: interrupted", err
