"""Kill a real `sftdata run` at several points, resume, and compare with an uninterrupted run byte for byte."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tests.synth import generate_broken_lines, generate_records

ARGS = ["--chunk-size", "24KiB", "--shard-size", "48KiB", "--no-audit"]


def sftdata(*args, env=None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "sftdata.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=300, **kw)


def folder_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    d = tmp_path_factory.mktemp("resume")
    lines = [*generate_records(500, seed=31), *(b for b, _ in generate_broken_lines(20, seed=32))]
    src = write_jsonl(d / "in.jsonl", lines)
    ref = d / "ref"
    r = sftdata("run", "--input", str(src), "--output", str(ref), "--workers", "2", *ARGS)
    assert r.returncode == 0, r.stderr
    return src, folder_bytes(ref)


@pytest.mark.slow
@pytest.mark.parametrize("fault,workers", [
    ("chunk_done:2", 1),
    ("chunk_done:6", 2),
    ("worker_chunk:3", 2),
    ("before_finalize:1", 2),
    ("before_manifest:1", 1),
])
def test_killed_run_resumes_byte_identical(corpus, tmp_path, fault, workers):
    src, reference = corpus
    out = tmp_path / "out"
    r = sftdata("run", "--input", str(src), "--output", str(out), "--workers", str(workers), *ARGS,
                env={"SFTDATA_FAULT": fault})
    assert r.returncode != 0
    if fault.startswith("worker_chunk"):
        assert "worker process died" in r.stderr and "--resume" in r.stderr
    assert not (out / "manifest.json").exists(), "a killed run must never leave a manifest"
    refused = sftdata("run", "--input", str(src), "--output", str(out), *ARGS)
    assert refused.returncode == 2 and "not empty" in refused.stderr
    resumed = sftdata("run", "--input", str(src), "--output", str(out), "--workers", "2", "--resume", *ARGS)
    assert resumed.returncode == 0, resumed.stderr
    if not fault.startswith("before_finalize") and not fault.startswith("before_manifest"):
        assert "resumed from a previous run" in resumed.stdout
    assert folder_bytes(out) == reference


@pytest.mark.slow
def test_external_sigkill_then_resume(corpus, tmp_path):
    src, reference = corpus
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "sftdata.cli", "run", "--input", str(src), "--output", str(out),
                             "--workers", "2", *ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = list((out / "_chunks").glob("chunk-*.json")) if (out / "_chunks").is_dir() else []
        if len(done) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = sftdata("run", "--input", str(src), "--output", str(out), "--workers", "1", "--resume", *ARGS)
    assert resumed.returncode == 0, resumed.stderr
    assert folder_bytes(out) == reference


def test_resume_with_other_settings_is_refused(corpus, tmp_path):
    src, _ = corpus
    out = tmp_path / "out"
    r = sftdata("run", "--input", str(src), "--output", str(out), *ARGS, env={"SFTDATA_FAULT": "chunk_done:1"})
    assert r.returncode != 0
    again = sftdata("run", "--input", str(src), "--output", str(out), "--resume", "--max-length", "512", *ARGS)
    assert again.returncode == 1 and "other inputs or settings" in again.stderr
