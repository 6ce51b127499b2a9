"""Resume never mixes inputs or tokenizers, and a run that produces nothing usable fails loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sftdata.config import Settings
from sftdata.errors import RunError, UnusableRunError
from sftdata.runner import run_pipeline
from tests.conftest import sftdata_cli as cli
from tests.conftest import write_jsonl
from tests.synth import generate_records

ROOT = Path(__file__).resolve().parents[2]
ARGS = ("--no-audit", "--chunk-size", "4KB", "--workers", "1")


def same_size_edit(path: Path) -> None:
    """Change one byte inside a string value, keep size and modification time (as ``cp -p`` would)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    at = data.index(b'"content": "') + len(b'"content": "')
    data[at] = ord("Q") if data[at] != ord("Q") else ord("R")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture()
def src(tmp_path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", generate_records(40, seed=11))


def test_finished_folder_resume_refuses_a_same_size_edit(src, tmp_path):
    out = tmp_path / "o"
    assert cli("run", "--input", str(src), "--output", str(out), *ARGS).returncode == 0
    assert cli("run", "--input", str(src), "--output", str(out), *ARGS, "--resume").returncode == 0  # a no-op
    same_size_edit(src)
    r = cli("run", "--input", str(src), "--output", str(out), *ARGS, "--resume")
    assert r.returncode == 1 and "not the file it was made from" in r.stderr, r.stderr


def test_killed_run_resume_refuses_an_edit_that_keeps_size_and_mtime(src, tmp_path):
    out = tmp_path / "o"
    killed = cli("run", "--input", str(src), "--output", str(out), *ARGS, env={"SFTDATA_FAULT": "chunk_done:2"})
    assert killed.returncode != 0 and (out / "_chunks" / "chunk-000000.json").exists()
    same_size_edit(src)  # the edit lands in chunk 0, which is committed
    r = cli("run", "--input", str(src), "--output", str(out), *ARGS, "--resume")
    assert r.returncode == 1 and "changed since chunk 0" in r.stderr and "mix old and new" in r.stderr, r.stderr
    assert not (out / "manifest.json").exists()


def test_resume_names_a_changed_tokenizer(src, tmp_path):
    out = tmp_path / "o"
    killed = cli("run", "--input", str(src), "--output", str(out), *ARGS, env={"SFTDATA_FAULT": "chunk_done:1"})
    assert killed.returncode != 0
    plan_path = out / "_chunks" / "plan.json"
    plan = json.loads(plan_path.read_text())
    assert plan["tokenizer_fingerprint"].startswith("sha256:")
    plan["tokenizer_fingerprint"] = "sha256:" + "0" * 64  # what a tokenizer folder edited in between gives
    plan_path.write_text(json.dumps(plan))
    r = cli("run", "--input", str(src), "--output", str(out), *ARGS, "--resume")
    assert r.returncode == 1 and "the tokenizer" in r.stderr, r.stderr


def test_resume_names_a_changed_setting(src, tmp_path):
    out = tmp_path / "o"
    assert cli("run", "--input", str(src), "--output", str(out), *ARGS,
               env={"SFTDATA_FAULT": "chunk_done:1"}).returncode != 0
    r = cli("run", "--input", str(src), "--output", str(out), *ARGS, "--resume", "--max-length", "512")
    assert r.returncode == 1 and "max_length" in r.stderr, r.stderr


def test_input_truncated_while_the_run_reads_it_fails(src, tmp_path):
    out = tmp_path / "o"
    full = src.read_bytes()

    def truncate_after_first(res, done, total):
        if done == 1:
            src.write_bytes(full[: len(full) // 2])

    with pytest.raises(RunError, match="truncated while the run read it|changed while the run read it"):
        run_pipeline(Settings(chunk_size=4096), [str(src)], out, workers=1, progress=truncate_after_first)
    assert not (out / "manifest.json").exists()


def test_chunk_digest_sees_a_shorter_input(tmp_path):
    from sftdata.process.identity import InputChanged, chunk_digest
    from sftdata.stages.read.jsonl import Chunk

    f = tmp_path / "x.jsonl"
    f.write_bytes(b"a\n" * 100)
    chunk = Chunk(0, str(f), f.name, 100, 200, 51)
    before = chunk_digest(chunk)
    f.write_bytes(b"a\n" * 60)
    with pytest.raises(InputChanged, match="ends at byte 120"):
        chunk_digest(chunk)
    f.write_bytes(b"a\n" * 50 + b"b\n" * 50)
    assert chunk_digest(chunk) != before


def test_no_rows_is_a_failure_with_the_top_reasons(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"conversation": [{"from": "human", "value": "hi"}]}) + "\n" for _ in range(5)))
    r = cli("run", "--input", str(bad), "--output", str(tmp_path / "o"), "--input-format", "messages")
    assert r.returncode == 1 and "wrote no rows" in r.stderr and "rejected" in r.stderr, r.stderr
    assert "records read" in r.stdout  # the summary is still printed
    assert "OK: every rule holds" not in r.stdout
    assert (tmp_path / "o" / "quarantine.jsonl").read_text().count("\n") == 5


@pytest.mark.parametrize("content", [b"", b"\r\r\r", b"\n\n\n"])
def test_empty_inputs_fail(tmp_path, content):
    f = tmp_path / "empty.jsonl"
    f.write_bytes(content)
    r = cli("run", "--input", str(f), "--output", str(tmp_path / "o"))
    assert r.returncode == 1 and "wrote no rows" in r.stderr, r.stderr


def test_a_broken_tokenizer_fails_the_run(src, tmp_path, monkeypatch):
    from sftdata.stages.encode import PieceEncoder

    def broken(self, pieces):
        raise ValueError("vocabulary file is damaged")

    monkeypatch.setattr(PieceEncoder, "encode", broken)
    with pytest.raises(UnusableRunError, match="internal_error"):
        run_pipeline(Settings(), [str(src)], tmp_path / "o", workers=1)


def test_zero_sizes_are_usage_errors(src, tmp_path):
    for flag in ("--shard-size", "--chunk-size"):
        r = cli("run", "--input", str(src), "--output", str(tmp_path / "o"), flag, "0")
        assert r.returncode == 2 and "0" in r.stderr, (flag, r.stderr)


def test_a_missing_input_is_a_usage_error(tmp_path):
    r = cli("run", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and "does not exist" in r.stderr, r.stderr


def test_a_full_disk_names_the_file_and_says_how_to_resume(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: writes past it fail with EFBIG, as ENOSPC would."""
    import resource
    import signal

    src = write_jsonl(tmp_path / "in.jsonl", generate_records(400, seed=2))
    out = tmp_path / "o"

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    r = subprocess.run([sys.executable, "-m", "sftdata.cli", "run", "--input", str(src), "--output", str(out),
                        "--workers", "1", "--no-audit", "--chunk-size", "4MB"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300, preexec_fn=small_files,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "File too large" in r.stderr and str(out) in r.stderr and "--resume" in r.stderr, r.stderr
    assert not (out / "manifest.json").exists()
    resumed = cli("run", "--input", str(src), "--output", str(out), "--workers", "1", "--no-audit",
                  "--chunk-size", "4MB", "--resume")
    assert resumed.returncode == 0, resumed.stderr
