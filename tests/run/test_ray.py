"""The Ray executor writes exactly what the local executor writes: on a local Ray instance, on a
cluster started with ``ray start``, and when a worker is SIGKILLed mid-run and Ray retries it.

Every Ray server these tests start listens on 127.0.0.1 only: the cluster is started with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's single-node switch; without it Ray rewrites
``127.0.0.1`` to the machine's network address), and the driver gets the same setting so it
looks for the cluster on loopback too. The local instance does this by itself
(``sftdata.executors.ray._loopback_only``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from sftdata.config import settings_from_dict
from sftdata.runner import RunError, run_pipeline
from tests.synth import generate_broken_lines, generate_records, write_jsonl

CHUNK = 16384
WORKERS = 2  # the test machine has 2 cores
LOOPBACK_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "TOKENIZERS_PARALLELISM": "false"}
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")


def _settings():
    settings = settings_from_dict({}, overrides={"chunk_size": CHUNK})
    settings.audit_enabled = False
    return settings


def folder_bytes(path: Path) -> dict[str, bytes]:
    """Every file of a finished output folder, dot-files included (a leftover temp file fails)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def rows(path: Path) -> list[tuple]:
    """All rows in manifest (= input) order."""
    manifest = orjson.loads((path / "manifest.json").read_bytes())
    out: list[tuple] = []
    for shard in manifest["shards"]:
        table = pa.ipc.open_stream(pa.memory_map(str(path / shard["file"]))).read_all()
        out.extend(zip(*(table.column(c).to_pylist() for c in ("id", "input_ids", "labels")), strict=True))
    return out


def assert_same_output(got: Path, want: Path) -> None:
    assert not (got / "_chunks").exists(), "a finished run removes its work folder"
    assert rows(got) == rows(want)
    assert (got / "manifest.json").read_bytes() == (want / "manifest.json").read_bytes()
    assert folder_bytes(got) == folder_bytes(want)


def sftdata_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sftdata.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **LOOPBACK_ENV, **(env or {})}, timeout=240)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """400 records plus a few broken lines (so quarantine.jsonl is compared too), ~28 chunks."""
    src = tmp_path_factory.mktemp("ray") / "in.jsonl"
    write_jsonl(src, generate_records(400, seed=11))
    with open(src, "a", encoding="utf-8") as f:
        f.writelines(line + "\n" for line, _ in generate_broken_lines(8, seed=12))
    return src


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray-ref") / "local"
    summary = run_pipeline(_settings(), [str(corpus)], out, workers=WORKERS)
    assert summary.chunks_total > 2 * WORKERS, "the in-flight limit must be exercised"
    assert summary.manifest["counts"]["rejected"], "the corpus must exercise the quarantine"
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node cluster from ``ray start --head``, stopped by signalling the processes it started.

    ``--block`` keeps ``ray start`` in the foreground and makes it stop everything it started on
    SIGTERM. ``ray stop`` is not used: it kills *every* Ray process of this machine, including
    other test sessions' instances.
    """
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("ray-cluster") / "ray-start.log"
    ray_bin = str(Path(sys.executable).with_name("ray"))
    cmd = [ray_bin, "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
           "--num-cpus", str(WORKERS), "--include-dashboard=false", "--disable-usage-stats",
           "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port())]
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env={**os.environ, **LOOPBACK_ENV},
                                start_new_session=True)
    try:
        deadline = time.time() + 150
        while b"Ray runtime started" not in log.read_bytes():
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"ray start did not come up:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        # SIGTERM to `ray start` alone: it drains the node and stops its processes in ~3 s (signalling
        # the whole group kills the raylet first and makes the drain wait out its 30 s timeout).
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # anything of that cluster still alive
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
@needs_ray
def test_local_ray_instance_matches_local_executor(corpus, reference, tmp_path):
    out = tmp_path / "ray"
    run_pipeline(_settings(), [str(corpus)], out, workers=WORKERS, executor="ray")
    assert_same_output(out, reference)


@pytest.mark.slow
@needs_ray
def test_dedupe_on_ray_matches_the_local_executor(corpus, tmp_path):
    """``dedupe: exact`` renders in one pass and writes from it in another: both on Ray's workers."""
    twice = tmp_path / "twice.jsonl"
    lines = corpus.read_bytes().splitlines()
    twice.write_bytes(b"\n".join(lines + [line.replace(b'"gen-', b'"again-') for line in lines[::3]]) + b"\n")
    s = _settings()
    s.dedupe = "exact"
    local = run_pipeline(s, [str(twice)], tmp_path / "local", workers=WORKERS).manifest
    assert local["counts"]["rejected"]["duplicate"] > 100
    run_pipeline(s, [str(twice)], tmp_path / "ray", workers=WORKERS, executor="ray")
    assert_same_output(tmp_path / "ray", tmp_path / "local")


@pytest.mark.slow
def test_cli_on_a_ray_cluster_matches_local_executor(cluster, corpus, reference, tmp_path):
    out = tmp_path / "ray-cluster"
    r = sftdata_cli("run", "--input", str(corpus), "--output", str(out), "--chunk-size", str(CHUNK),
                    "--no-audit", "--workers", str(WORKERS), "--executor", "ray", "--ray-address", cluster)
    assert r.returncode == 0, r.stderr
    assert_same_output(out, reference)


@pytest.mark.slow
def test_killed_worker_is_retried_and_output_is_clean(cluster, corpus, reference, tmp_path):
    """The first attempt of one chunk dies by SIGKILL after committing its shards and done-marker;
    Ray retries it, the retry cleans that attempt's files up, and the run equals a clean one."""
    out, marker = tmp_path / "ray-killed", tmp_path / "killed-once"
    r = sftdata_cli("run", "--input", str(corpus), "--output", str(out), "--chunk-size", str(CHUNK),
                    "--no-audit", "--workers", str(WORKERS), "--executor", "ray", "--ray-address", cluster,
                    env={"SFTDATA_RAY_KILL_ONCE": str(marker)})
    assert r.returncode == 0, r.stderr
    assert marker.exists(), "the test hook did not fire: no worker was killed"
    assert_same_output(out, reference)


@pytest.mark.slow
def test_local_run_killed_then_resumed_on_ray(cluster, corpus, reference, tmp_path):
    """Resume is driven by the runner's done-markers, so the executor may change in between."""
    out = tmp_path / "switched"
    args = ["--input", str(corpus), "--output", str(out), "--chunk-size", str(CHUNK), "--no-audit"]
    killed = sftdata_cli("run", *args, "--workers", "1", env={"SFTDATA_FAULT": "chunk_done:3"})
    assert killed.returncode != 0 and not (out / "manifest.json").exists()
    assert len(list((out / "_chunks").glob("chunk-*[0-9].json"))) == 3
    resumed = sftdata_cli("run", *args, "--resume", "--workers", str(WORKERS), "--executor", "ray",
                          "--ray-address", cluster)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_output(out, reference)


def test_retry_removes_only_its_own_chunks_leftovers(tmp_path):
    from sftdata.executors.ray import clean_chunk_leftovers

    out, work = tmp_path, tmp_path / "_chunks"
    work.mkdir()
    mine = [out / "shard-000003-00.arrow", out / "shard-000003-01.arrow", out / ".shard-000003-02.arrow.tmp",
            work / "chunk-000003.json", work / "chunk-000003.quarantine.jsonl", work / ".chunk-000003.json.tmp123"]
    others = [out / "shard-000030-00.arrow", out / "shard-000004-00.arrow", out / ".shard-000004-00.arrow.tmp",
              work / "chunk-000004.json", work / ".chunk-000004.json.tmp9", work / "plan.json"]
    for p in mine + others:
        p.write_bytes(b"x")
    clean_chunk_leftovers(str(out), 3)
    assert [p.name for p in mine if p.exists()] == []
    assert all(p.exists() for p in others)


def test_missing_ray_says_how_to_install(monkeypatch, corpus, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(RunError, match=r"pip install 'sftdata\[ray\]'"):
        run_pipeline(_settings(), [str(corpus)], tmp_path / "out", workers=1, executor="ray")


def test_unreachable_cluster_fails_fast(corpus, tmp_path):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    started = time.time()
    with pytest.raises(RunError, match="cannot join the Ray cluster at 127.0.0.1:"):
        run_pipeline(_settings(), [str(corpus)], tmp_path / "out", workers=1, executor="ray",
                     ray_address=f"127.0.0.1:{_free_port()}")
    assert time.time() - started < 60
