"""Every command reads through the one opener and the one name check (issue 27).

Each case runs the real CLI in a subprocess with a timeout, so a command that would block on a
FIFO or read ``/dev/zero`` fails the test instead of hanging the suite. Names from a manifest
that are paths point at a FIFO: a command that opened the file before checking its name would
block, so passing proves the refusal came before any read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import snapshot
from tests.interop.harness import make_prepared

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "export": lambda d, out: ["export", d, "--to", "parquet", "--output", out, "--skip-audit"],
    "audit": lambda d, out: ["audit", d],
    "verify": lambda d, out: ["verify", d],
    "inspect": lambda d, out: ["inspect", d],
    "plan": lambda d, out: ["plan", d],
    "overlap": lambda d, out: ["overlap", d, d],
}


def cli(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sftdata.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "TOKENIZERS_PARALLELISM": "false",
                                                          "PYTHONPATH": str(ROOT), **(env or {})})


def one_line_refusal(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("reads"), "run1", packed=False, n=40)


@pytest.fixture()
def copy(prepared, tmp_path) -> Path:
    folder = tmp_path / "data" / "run1"
    shutil.copytree(prepared, folder)
    return folder


def edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("command", ["export", "audit", "inspect", "plan", "overlap"])
@pytest.mark.parametrize("kind", ["absolute", "dotdot", "repeated"])
def test_manifest_shard_names_are_checked_before_anything_is_read(copy, tmp_path, command, kind):
    fifo = copy.parent / "secret.arrow"
    os.mkfifo(fifo)  # a command that opens it before checking the name blocks (and the test times out)
    first = json.loads((copy / "manifest.json").read_text())["shards"][0]["file"]
    name = {"absolute": str(fifo), "dotdot": "../secret.arrow", "repeated": first}[kind]
    edit_manifest(copy, lambda m: m["shards"].append({**m["shards"][0], "file": name}))
    before = snapshot(tmp_path)
    err = one_line_refusal(cli(*COMMANDS[command](copy, tmp_path / "out")))
    assert "secret.arrow" in err or "listed twice" in err
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["export", "audit", "verify", "inspect", "plan", "overlap"])
def test_a_fifo_manifest_is_refused_without_a_hang(copy, tmp_path, command):
    (copy / "manifest.json").unlink()
    os.mkfifo(copy / "manifest.json")
    r = cli(*COMMANDS[command](copy, tmp_path / "out"), timeout=30)
    assert "FIFO" in one_line_refusal(r)


@pytest.mark.parametrize("command", ["export", "plan", "overlap", "audit", "verify"])
def test_a_fifo_shard_never_hangs(copy, tmp_path, command):
    shard = json.loads((copy / "manifest.json").read_text())["shards"][0]["file"]
    (copy / shard).unlink()
    os.mkfifo(copy / shard)
    r = cli(*COMMANDS[command](copy, tmp_path / "out"), timeout=30)
    assert "Traceback" not in r.stderr
    if command in ("export", "plan", "overlap"):
        assert "FIFO" in one_line_refusal(r)
    else:  # audit and verify report the shard by name and fail the check
        assert r.returncode == 1 and shard in r.stdout + r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["audit", "verify"])
def test_a_fifo_state_json_never_hangs(copy, command):
    (copy / "state.json").unlink()
    os.mkfifo(copy / "state.json")
    r = cli(*COMMANDS[command](copy, None), timeout=30)
    assert r.returncode == 1 and "state.json" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_a_fifo_state_json_is_refused_by_plan(copy):
    (copy / "state.json").unlink()
    os.mkfifo(copy / "state.json")
    assert "FIFO" in one_line_refusal(cli("plan", copy, timeout=30))


def test_a_manifest_linked_to_dev_zero_is_refused(copy):
    (copy / "manifest.json").unlink()
    (copy / "manifest.json").symlink_to("/dev/zero")
    for command in ("verify", "inspect", "overlap", "export"):
        r = cli(*COMMANDS[command](copy, copy.parent / "out"), timeout=30)
        assert "character device" in one_line_refusal(r), command


@pytest.mark.parametrize("how", ["fifo", "dev_zero"])
def test_an_mds_index_that_is_not_a_file_is_refused_by_the_audit(tmp_path, how):
    folder = tmp_path / "mds"
    folder.mkdir()
    if how == "fifo":
        os.mkfifo(folder / "index.json")
    else:
        (folder / "index.json").symlink_to("/dev/zero")
    assert "index.json" in one_line_refusal(cli("audit", folder, timeout=30))


def test_a_state_json_listing_one_file_100000_times_is_refused_fast(prepared, tmp_path):
    """The audit of a datasets folder (no manifest) read the same file 100,000 times (> 90 s)."""
    folder = tmp_path / "ds"
    folder.mkdir()
    shard = json.loads((prepared / "manifest.json").read_text())["shards"][0]["file"]
    shutil.copy(prepared / shard, folder / "data-00000.arrow")
    shutil.copy(prepared / "dataset_info.json", folder / "dataset_info.json")
    state = json.loads((prepared / "state.json").read_text())
    state["_data_files"] = [{"filename": "data-00000.arrow"}] * 100_000
    (folder / "state.json").write_text(json.dumps(state))
    started = time.monotonic()
    err = one_line_refusal(cli("audit", folder, timeout=60))
    assert "listed twice" in err and time.monotonic() - started < 30


@pytest.mark.parametrize("command", ["export", "audit", "verify", "inspect", "plan", "overlap"])
def test_oversized_metadata_is_refused_with_one_line(copy, tmp_path, command):
    size = (copy / "manifest.json").stat().st_size
    r = cli(*COMMANDS[command](copy, tmp_path / "out"), env={"SFTDATA_MAX_METADATA_BYTES": str(size - 1)})
    assert "more than" in one_line_refusal(r) and "manifest.json" in r.stderr


def test_a_manifest_over_64_mib_is_refused_before_it_is_parsed(copy):
    with open(copy / "manifest.json", "ab") as f:  # still valid JSON: trailing whitespace
        f.write(b" " * (64 << 20))
    r = cli("verify", copy, timeout=60)
    assert "more than the 67108864 bytes" in one_line_refusal(r)
