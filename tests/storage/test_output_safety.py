"""sftdata never deletes a file it did not write, and one writer per folder (issue: output-folder safety).

Each test builds the situation a careless script or a second terminal creates, runs the real CLI
(or ``run_pipeline``), and checks that user files are byte-for-byte where they were.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import sftdata_cli as cli
from tests.conftest import snapshot, write_jsonl
from tests.synth import generate_records

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def src(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    return write_jsonl(tmp_path / "data" / "in.jsonl", generate_records(30, seed=3))


def test_empty_output_is_a_usage_error_and_touches_nothing(src, tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    r = cli("run", "--input", str(src), "--output", "", "--overwrite", cwd=tmp_path / "work")
    assert r.returncode == 2 and "--output is empty" in r.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["root", "home"])
def test_root_and_home_are_refused(src, tmp_path, where):
    target = "/" if where == "root" else str(Path.home())
    r = cli("run", "--input", str(src), "--output", target, "--overwrite")
    assert r.returncode == 2 and ("filesystem root" in r.stderr or "home folder" in r.stderr), r.stderr


def test_overwrite_of_a_folder_that_is_not_ours_deletes_nothing(src, tmp_path):
    home = tmp_path / "project"
    (home / ".git").mkdir(parents=True)
    (home / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (home / "notes.md").write_text("do not lose me")
    (home / "shard-000001-keep.arrow").write_bytes(b"user data that looks like a shard")
    before = snapshot(home)
    r = cli("run", "--input", str(src), "--output", str(home), "--overwrite")
    assert r.returncode == 2 and "did not write" in r.stderr and "notes.md" in r.stderr, r.stderr
    assert snapshot(home) == before


def test_overwrite_with_the_inputs_own_folder_keeps_the_input(src):
    before = src.read_bytes()
    r = cli("run", "--input", str(src), "--output", str(src.parent), "--overwrite")
    assert r.returncode == 2 and "inside the output folder" in r.stderr, r.stderr
    assert src.read_bytes() == before


def test_output_inside_an_input_folder_is_refused(src):
    r = cli("run", "--input", str(src.parent), "--output", str(src.parent / "out"))
    assert r.returncode == 2 and "inside the input folder" in r.stderr, r.stderr
    assert not (src.parent / "out").exists()


def test_resume_into_a_foreign_folder_deletes_nothing(src, tmp_path):
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "sub" / ".cache.tmp").write_text("editor swap")
    (other / ".x.tmp123").write_text("another tool's temp")
    (other / "shard-000000-00.arrow").write_bytes(b"not ours")
    before = snapshot(other)
    r = cli("run", "--input", str(src), "--output", str(other), "--resume")
    assert r.returncode == 2 and "not an sftdata output folder" in r.stderr, r.stderr
    assert snapshot(other) == before


def test_resume_and_overwrite_together_are_a_usage_error(src, tmp_path):
    r = cli("run", "--input", str(src), "--output", str(tmp_path / "o"), "--resume", "--overwrite")
    assert r.returncode == 2 and "contradict" in r.stderr
    assert not (tmp_path / "o").exists()


def test_overwrite_of_our_own_folder_replaces_only_our_files(src, tmp_path):
    out = tmp_path / "o"
    assert cli("run", "--input", str(src), "--output", str(out), "--no-audit").returncode == 0
    first = snapshot(out)
    r = cli("run", "--input", str(src), "--output", str(out), "--overwrite", "--no-audit", "--max-length", "4096")
    assert r.returncode == 0, r.stderr
    again = snapshot(out)
    assert set(again) == set(first) and again["manifest.json"] != first["manifest.json"]


def test_a_second_run_into_a_locked_folder_fails_at_once_naming_the_holder(src, tmp_path):
    from sftdata.output import RunLock
    from sftdata.storage import Folder

    out = tmp_path / "o"
    with RunLock(Folder(out)):
        t0 = time.monotonic()
        r = cli("run", "--input", str(src), "--output", str(out))
        assert time.monotonic() - t0 < 60
    assert r.returncode == 2 and "another sftdata run" in r.stderr and f"pid {os.getpid()}" in r.stderr, r.stderr
    assert not (out / "manifest.json").exists()


def test_a_stale_lock_of_a_killed_run_is_taken_over(src, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / ".sftdata.lock").write_text("pid 999999 on elsewhere, started long ago\n")  # nobody holds the flock
    r = cli("run", "--input", str(src), "--output", str(out), "--no-audit")
    assert r.returncode == 0, r.stderr
    assert not (out / ".sftdata.lock").exists()


def test_two_runs_started_together_one_wins_and_the_folder_is_clean(src, tmp_path):
    out, ref = tmp_path / "o", tmp_path / "ref"
    assert cli("run", "--input", str(src), "--output", str(ref), "--no-audit", "--chunk-size", "4KB").returncode == 0
    cmd = [sys.executable, "-m", "sftdata.cli", "run", "--input", str(src), "--output", str(out), "--no-audit",
           "--chunk-size", "4KB", "--workers", "1"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    # whichever order they reach the folder in, exactly one writes: the other meets the lock (or,
    # when the first has already finished, a folder that is not empty)
    assert sorted(p.returncode for p in procs) == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)][1]
    assert "another sftdata run" in loser or "not empty" in loser, loser
    assert snapshot(out) == snapshot(ref)


def test_foreign_done_markers_are_not_trusted_on_resume(src, tmp_path):
    out = tmp_path / "o"
    args = ("run", "--input", str(src), "--output", str(out), "--no-audit", "--chunk-size", "4KB", "--workers", "1")
    killed = cli(*args, env={"SFTDATA_FAULT": "chunk_done:2"})
    assert killed.returncode != 0
    marker = out / "_chunks" / "chunk-000000.json"
    data = json.loads(marker.read_text())
    data["run_id"] = "someone-else"
    marker.write_text(json.dumps(data))
    resumed = cli(*args[:-2], "--resume", "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert "1 resumed from a previous run" in resumed.stdout  # chunk 0 was redone, chunk 1 kept


def test_commit_refuses_markers_of_another_run():
    from sftdata.errors import OutputFolderError
    from sftdata.output import check_markers_are_ours

    check_markers_are_ours("a", {0: "a", 1: "a"}, "out")
    with pytest.raises(OutputFolderError, match="another run"):
        check_markers_are_ours("a", {0: "a", 1: "b"}, "out")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exits_130_with_the_resume_hint(tmp_path, sig):
    src = write_jsonl(tmp_path / "big.jsonl", generate_records(3000, seed=5))
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "sftdata.cli", "run", "--input", str(src), "--output", str(out),
                             "--chunk-size", "16KB", "--workers", "1", "--no-audit"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    deadline = time.monotonic() + 120
    while not list((out / "_chunks").glob("chunk-*[0-9].json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert not (out / "manifest.json").exists()
    resumed = cli("run", "--input", str(src), "--output", str(out), "--chunk-size", "16KB", "--workers", "1",
                  "--no-audit", "--resume")
    assert resumed.returncode == 0, resumed.stderr
