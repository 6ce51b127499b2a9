"""The one opener (``sftdata.storage.opener``) and the one name check (``storage.layout.check_names``).

Every refusal is an ``UnsafeFileError`` (exit 2) naming the file, raised before a byte is read: a
FIFO must not block, ``/dev/zero`` must not be read, oversized metadata must not be parsed.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from sftdata.errors import UnsafeFileError
from sftdata.storage.layout import check_names, manifest_shard_names, state_file_names
from sftdata.storage.opener import map_regular, open_regular, read_json, read_regular, regular_size


@pytest.fixture(autouse=True)
def _no_hang():
    """A FIFO opened without the opener blocks forever: fail the test instead of hanging the suite."""
    def boom(*_):
        raise TimeoutError("blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("reader", [read_regular, read_json, map_regular, regular_size, open_regular])
def test_a_fifo_is_refused_at_once(tmp_path, reader):
    fifo = tmp_path / "state.json"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFileError, match="FIFO"):
        reader(fifo)


@pytest.mark.parametrize("reader", [read_regular, read_json, map_regular])
def test_a_link_to_dev_zero_is_refused(tmp_path, reader):
    link = tmp_path / "index.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(UnsafeFileError, match="character device"):
        reader(link)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(UnsafeFileError, match="folder"):
        read_regular(tmp_path)


def test_oversized_metadata_is_refused_before_parsing(tmp_path, monkeypatch):
    big = tmp_path / "manifest.json"
    big.write_bytes(b"[" + b"0," * 2000 + b"0]")
    monkeypatch.setenv("SFTDATA_MAX_METADATA_BYTES", "1000")
    with pytest.raises(UnsafeFileError, match="more than the 1000 bytes"):
        read_json(big)
    assert len(read_regular(big, limit=None)) == big.stat().st_size  # data files have no limit


def test_a_symlink_to_a_regular_file_is_followed(tmp_path):
    (tmp_path / "blob").write_text('{"a": 1}')
    (tmp_path / "config.json").symlink_to(tmp_path / "blob")  # a hub snapshot is such links
    assert read_json(tmp_path / "config.json") == {"a": 1}
    assert bytes(map_regular(tmp_path / "config.json")) == b'{"a": 1}'
    with open_regular(tmp_path / "config.json") as f:
        assert f.read() == b'{"a": 1}'


def test_garbage_json_is_one_line(tmp_path):
    (tmp_path / "x.json").write_bytes(b"\xff{")
    with pytest.raises(UnsafeFileError, match="not valid JSON") as exc:
        read_json(tmp_path / "x.json")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.arrow", "a/b.arrow", "..", ".", "", None, 3, "a\\b", "x\0y"])
def test_names_that_are_paths_are_refused(name):
    with pytest.raises(UnsafeFileError, match="entry 1"):
        check_names(["ok.arrow", name], "state.json")


def test_shard_names_must_be_shard_names():
    assert manifest_shard_names([{"file": "shard-000000-00.arrow"}]) == ["shard-000000-00.arrow"]
    with pytest.raises(UnsafeFileError, match="not a file name this folder"):
        manifest_shard_names([{"file": "secret.parquet"}])


def test_100000_repeated_entries_are_refused_fast():
    state = {"_data_files": [{"filename": "data-00000.arrow"}] * 100_000}
    started = time.perf_counter()
    with pytest.raises(UnsafeFileError, match="listed twice"):
        state_file_names(json.loads(json.dumps(state)))
    assert time.perf_counter() - started < 1.0
