"""`sftdata run/validate/audit/verify` end the process without the interpreter's teardown
(``cli._end_process``), keeping what an exit must do: exit code, atexit handlers, threads, output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.conftest import write_jsonl
from tests.synth import generate_records

# A script that runs the CLI as `sftdata` does, with witnesses of what happens at exit: an atexit
# handler, a non-daemon thread still running, and an object whose __del__ only a teardown calls.
SCRIPT = r"""
import atexit, sys, threading, time
from sftdata.cli import main

class Witness:
    def __del__(self):
        print("teardown ran", flush=True)

keep = Witness()
atexit.register(lambda: print("atexit ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished", flush=True))).start()
sys.argv = ["sftdata", *sys.argv[1:]]
main()
"""


def _cli(*args: str, full: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SFTDATA_FULL_EXIT"}
    if full:
        env["SFTDATA_FULL_EXIT"] = "1"
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("fastexit") / "good.jsonl", generate_records(20, seed=61))


@pytest.mark.parametrize("full", [False, True])
def test_exit_code_handlers_threads_and_output_survive(good, tmp_path, full):
    out = tmp_path / "out"
    r = _cli("run", "--input", str(good), "--output", str(out), "--no-audit", full=full)
    assert r.returncode == 0, r.stderr
    assert "atexit ran" in r.stdout and "thread finished" in r.stdout
    assert "ids used twice+" in r.stdout  # the run summary reached the pipe
    assert (out / "manifest.json").is_file()
    assert ("teardown ran" in r.stdout) == full  # only the ordinary exit frees every object


@pytest.mark.parametrize("full", [False, True])
def test_failure_codes_are_kept(good, tmp_path, full):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("not sftdata's")
    refused = _cli("run", "--input", str(good), "--output", str(out), full=full)
    assert refused.returncode == 2 and "not empty" in refused.stderr and "atexit ran" in refused.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "nope"}\n')
    invalid = _cli("validate", str(bad), full=full)
    assert invalid.returncode == 1, invalid.stderr
    missing = _cli("audit", str(tmp_path / "nothing-here"), full=full)
    assert missing.returncode == 2


def test_an_in_process_invocation_never_ends_the_process(good, tmp_path):
    """CliRunner passes its arguments: click's ordinary SystemExit, caught by the runner."""
    from sftdata.cli import main

    result = CliRunner().invoke(main, ["run", "--input", str(good), "--output", str(tmp_path / "o"), "--no-audit"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "manifest.json").is_file()
