"""Inputs and outputs on pyarrow filesystems: ``file://`` URIs, and ``s3://`` against an S3 server
on loopback (moto), so the real S3 client code runs: multipart uploads, listings, ranged reads.

The claim under test is the same as for the executors: the location changes nothing. A run from
and to S3 writes the bytes a local run writes, resumes after a kill, and the audit reads it back.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sftdata.audit.integrity import verify_folder
from sftdata.audit.run import run_audit
from sftdata.config import settings_from_dict
from sftdata.runner import run_pipeline
from sftdata.stages.read.jsonl import InputError, expand_inputs
from sftdata.stages.read.remote import open_input
from sftdata.storage import Folder, display, split_uri, staging_for
from tests.synth import generate_broken_lines, generate_records

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 16384
needs_moto = pytest.mark.skipif(importlib.util.find_spec("moto") is None, reason="moto is not installed")
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")


def _settings(**extra):
    settings = settings_from_dict({}, overrides={"chunk_size": CHUNK, **extra})
    settings.audit_enabled = False
    return settings


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("remote-corpus")
    path = folder / "chats.jsonl"
    lines = [orjson.dumps(r).decode() for r in generate_records(160, seed=5)]
    lines[10:10] = [line for line, _reason in generate_broken_lines(8, seed=5)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def local_out(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("remote-ref") / "out"
    run_pipeline(_settings(), [str(corpus)], out, workers=2)
    return out


def local_files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file() and p.name != "audit.json"}


def remote_files(location: str) -> dict[str, bytes]:
    folder = Folder(location)
    return {name: folder.read_bytes(name) for name in sorted(folder.listing()) if name != "audit.json"}


# ------------------------------------------------------------------------------------------ file://


def test_file_uri_output_and_input_match_a_local_run(corpus, local_out, tmp_path):
    out = f"file://{tmp_path}/out"
    summary = run_pipeline(_settings(), [f"file://{corpus}"], out, workers=2)
    assert summary.output == out
    assert local_files(tmp_path / "out") == local_files(local_out)
    # a file:// output is a local folder: it keeps the local commit protocol (fsync, rename)
    assert not Folder(out).remote and staging_for(Folder(out)) == tmp_path / "out"
    report = run_audit(out)
    assert report.ok, report.summary_text()
    assert report.path == out


def test_remote_globs_and_missing_inputs(tmp_path):
    for rel in ("a/x.jsonl", "a/b/y.jsonl", "a/b/z.txt", "c/w.jsonl"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    names = lambda files: [Path(str(f).removeprefix("file://")).relative_to(tmp_path).as_posix() for f in files]  # noqa: E731
    assert names(expand_inputs([f"file://{tmp_path}/a"])) == ["a/b/y.jsonl", "a/x.jsonl"]
    assert names(expand_inputs([f"file://{tmp_path}/*/*.jsonl"])) == ["a/x.jsonl", "c/w.jsonl"]
    assert names(expand_inputs([f"file://{tmp_path}/**/*.jsonl"])) == ["a/b/y.jsonl", "a/x.jsonl", "c/w.jsonl"]
    with pytest.raises(InputError, match="matched no file"):
        expand_inputs([f"file://{tmp_path}/*.parquet"])
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs([f"file://{tmp_path}/nope.jsonl"])


def test_uris_keep_their_query_and_user_part_for_workers_but_not_for_reports(tmp_path):
    assert display("s3://AKID:SECRET@bkt/out?endpoint_override=h:9000&scheme=http") == "s3://bkt/out"
    assert display("/plain/path") == "/plain/path"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sp ace.jsonl").write_text('{"x": 1}\n')
    (tmp_path / "in" / "c%41.jsonl").write_text('{"y": 2}\n')
    found = expand_inputs([f"file://{tmp_path}/in/*.jsonl"])
    assert sorted(f.name for f in found) == ["c%41.jsonl", "sp ace.jsonl"]
    with open_input(next(f for f in found if f.name == "sp ace.jsonl")) as f:
        assert f.read() == b'{"x": 1}\n'
    with open_input(next(f for f in found if f.name == "c%41.jsonl")) as f:
        assert f.read() == b'{"y": 2}\n'
    with pytest.raises(InputError, match="names no bucket or path"):
        expand_inputs(["s3://?region=us-east-1"])


# --------------------------------------------------------------------------------------------- s3://


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """An S3 endpoint on loopback; yields a function giving the URI of a key prefix."""
    if importlib.util.find_spec("moto") is None:
        pytest.skip("moto is not installed")
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    query = f"?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    from pyarrow import fs as pafs

    s3fs, _ = pafs.FileSystem.from_uri(f"s3://sftdata-test{query}&allow_bucket_creation=true")
    s3fs.create_dir("sftdata-test")
    try:
        yield lambda key: f"s3://sftdata-test/{key}{query}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _upload(uri: str, data: bytes) -> None:
    head, query = split_uri(uri)
    parent, name = head.rsplit("/", 1)
    Folder(parent + query).write_bytes(name, data)


@needs_moto
def test_s3_in_and_out_match_a_local_run_in_every_input_kind(s3, corpus, local_out, tmp_path):
    data = corpus.read_bytes()
    table = pa.Table.from_pylist(generate_records(120, seed=6, tools=False))
    pq.write_table(table, tmp_path / "chats.parquet", row_group_size=40)
    _upload(s3("in/chats.jsonl"), data)
    gz = gzip.compress(data, mtime=0)  # the same bytes both sides: the manifest records the inputs' digests
    _upload(s3("in/gz/chats.jsonl.gz"), gz)
    _upload(s3("in/pq/chats.parquet"), (tmp_path / "chats.parquet").read_bytes())
    summary = run_pipeline(_settings(), [s3("in/chats.jsonl")], s3("out-jsonl"), workers=2)
    assert remote_files(s3("out-jsonl")) == local_files(local_out)
    assert not staging_for(Folder(summary.output)).exists(), "the staging folder is removed at the end"
    for kind, local_input in (("gz", tmp_path / "chats.jsonl.gz"), ("pq", tmp_path / "chats.parquet")):
        if kind == "gz":
            local_input.write_bytes(gz)
        run_pipeline(_settings(), [str(local_input)], tmp_path / f"ref-{kind}", workers=2)
        run_pipeline(_settings(), [s3(f"in/{kind}/*")], s3(f"out-{kind}"), workers=2)
        assert remote_files(s3(f"out-{kind}")) == local_files(tmp_path / f"ref-{kind}"), kind
    report = run_audit(s3("out-jsonl"))
    assert report.ok, report.summary_text()
    assert report.path == "s3://sftdata-test/out-jsonl", "the query (endpoint, keys) stays out of reports"


@needs_moto
def test_s3_output_resumes_after_a_kill_to_the_same_bytes(s3, corpus, local_out):
    cmd = [sys.executable, "-m", "sftdata.cli", "run", "--input", str(corpus), "--output", s3("killed"),
           "--chunk-size", str(CHUNK), "--workers", "1", "--no-audit"]
    env = {**os.environ, "SFTDATA_FAULT": "chunk_done:3"}
    first = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == -9, first.stderr
    left = Folder(s3("killed")).listing()
    assert "manifest.json" not in left and sum(n.startswith("_chunks/chunk-") and n.endswith(".json")
                                               for n in left) == 3
    again = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "3 resumed" in again.stdout
    assert remote_files(s3("killed")) == local_files(local_out)


@needs_moto
def test_s3_dedupe_matches_a_local_dedupe(s3, corpus, tmp_path):
    """``dedupe: exact``'s first pass keeps each chunk's rendered records in this machine's staging
    folder; the main pass writes from them and uploads the same bytes as a local run."""
    twice = tmp_path / "twice.jsonl"
    lines = corpus.read_bytes().splitlines()
    twice.write_bytes(b"\n".join(lines + [line.replace(b'"gen-', b'"again-') for line in lines[::2]]) + b"\n")
    local = run_pipeline(_settings(dedupe="exact"), [str(twice)], tmp_path / "local", workers=2).manifest
    assert local["counts"]["rejected"]["duplicate"] > 50
    run_pipeline(_settings(dedupe="exact"), [str(twice)], s3("dedupe"), workers=2)
    assert remote_files(s3("dedupe")) == local_files(tmp_path / "local")


@needs_moto
def test_audit_and_verify_cli_on_s3(s3, corpus):
    out = s3("cli")
    run_pipeline(_settings(), [str(corpus)], out, workers=1)
    audit = subprocess.run([sys.executable, "-m", "sftdata.cli", "audit", out], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "OK: every rule holds" in audit.stdout
    folder = Folder(out)
    shard = sorted(n for n in folder.listing() if n.endswith(".arrow"))[0]
    data = bytearray(folder.read_bytes(shard))
    data[-20] ^= 0xFF
    folder.write_bytes(shard, bytes(data))
    report = verify_folder(out)
    assert [(p.file, p.kind) for p in report.problems] == [(shard, "corrupt")]
    verify = subprocess.run([sys.executable, "-m", "sftdata.cli", "verify", out], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert verify.returncode == 1 and shard in verify.stdout


@needs_moto
@needs_ray
def test_ray_tasks_write_to_s3_the_rows_of_a_local_run(s3, corpus, local_out, tmp_path, monkeypatch):
    """One task attempt is SIGKILLed after it uploaded its shards and done-marker; Ray's retry
    deletes the published marker, uploads the same files again, and the store ends as a clean run."""
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("SFTDATA_RAY_KILL_ONCE", str(marker))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    _upload(s3("ray-in/chats.jsonl"), corpus.read_bytes())
    run_pipeline(_settings(), [s3("ray-in/chats.jsonl")], s3("ray-out"), workers=2, executor="ray")
    assert marker.exists(), "the test hook did not fire: no worker was killed"
    assert remote_files(s3("ray-out")) == local_files(local_out)
