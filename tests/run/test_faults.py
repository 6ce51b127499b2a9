"""Faults: a full disk, a read-only output folder, an input file deleted mid-run.

Each must give a clear error naming the cause and leave the folder resumable, never a manifest
that lists a shard that is not there. The disk tests mount a small tmpfs (root only; skipped
where mounting is not allowed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sftdata.config import settings_from_dict
from sftdata.runner import RunError, run_pipeline
from tests.conftest import write_jsonl
from tests.synth import generate_records


def settings(**kw):
    s = settings_from_dict({}, overrides={"chunk_size": 16 << 10, **kw})
    s.audit_enabled = False
    return s


@pytest.fixture
def small_disk(tmp_path):
    mnt = Path("/tmp") / f"sftdata-tmpfs-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        mnt.rmdir()
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        mnt.rmdir()


def files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def test_full_disk_is_named_and_resumable(small_disk, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", generate_records(400, seed=51))
    reference = tmp_path / "ref"
    run_pipeline(settings(), [str(src)], reference)
    out = small_disk / "out"
    with pytest.raises(RunError, match="No space left on device") as info:
        run_pipeline(settings(), [str(src)], out)
    assert "--resume" in str(info.value)
    assert not (out / "manifest.json").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    run_pipeline(settings(), [str(src)], out, resume=True)
    assert files(out) == files(reference)


def test_read_only_output_is_refused(small_disk, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", generate_records(5, seed=52))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    r = subprocess.run([sys.executable, "-m", "sftdata.cli", "run", "--input", str(src), "--output",
                        str(small_disk), "--no-audit"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2  # the one OSError policy: a path the call named that cannot be written
    assert "not writable" in r.stderr or "Read-only file system" in r.stderr
    assert "Traceback" not in r.stderr


def test_input_deleted_mid_run(tmp_path):
    recs = generate_records(300, seed=53)
    src = write_jsonl(tmp_path / "in.jsonl", recs)
    keep = src.read_bytes()
    reference = tmp_path / "ref"
    run_pipeline(settings(), [str(src)], reference)
    out = tmp_path / "out"

    def delete_after_first(result, done, total):
        if done == 1:
            os.unlink(src)

    with pytest.raises(RunError) as info:
        run_pipeline(settings(), [str(src)], out, workers=1, progress=delete_after_first)
    assert "in.jsonl" in str(info.value) and "--resume" in str(info.value)
    assert not (out / "manifest.json").exists()
    src.write_bytes(keep)
    os.utime(src, ns=(os.stat(reference / "manifest.json").st_mtime_ns,) * 2)
    with pytest.raises(RunError, match="other inputs or settings"):
        run_pipeline(settings(), [str(src)], out, resume=True)  # the input changed (mtime): refused
    run_pipeline(settings(), [str(src)], out, overwrite=True)
    assert files(out) == files(reference)
