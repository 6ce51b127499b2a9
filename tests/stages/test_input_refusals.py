"""Inputs that cost a run its time or its folder are refused early, with one line (issue 27's
leftovers): newline bombs, a .json too large to load, binary Parquet columns, a degenerate
--chunk-size, a `datasets` folder with a file missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from sftdata.config import ConfigError, Settings, settings_from_dict
from sftdata.runner import run_pipeline
from sftdata.stages.read.jsonl import InputError
from tests.conftest import ROOT, run_committed, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
LAST = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "after the blanks"}]}


def settings(**kw):
    s = settings_from_dict({}, overrides=kw)
    s.audit_enabled = False
    return s


def quarantine(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]


def newline_bomb(path: Path, mib: int, blank: bytes = b"\n") -> Path:
    """A record, ``mib`` MiB of blank lines, a record: zstd-compressed (about 32 KB per GiB)."""
    c = zstandard.ZstdCompressor(level=19).compressobj()
    block = blank * ((1 << 20) // len(blank))
    parts = [c.compress(json.dumps(GOOD).encode() + b"\n")] + [c.compress(block) for _ in range(mib)]
    path.write_bytes(b"".join(parts) + c.compress(json.dumps(LAST).encode() + b"\n") + c.flush())
    return path


def test_the_blank_limit_defaults_to_64_mib():
    assert Settings().max_blank_bytes == settings().max_blank_bytes == 64 << 20
    assert settings_from_dict({"stages": {"read": {"max_blank_bytes": "1MiB"}}}).max_blank_bytes == 1 << 20


@pytest.mark.parametrize("blank", [b"\n", b"  \r\n"])
def test_a_newline_bomb_stops_at_the_limit(tmp_path, blank):
    bomb = newline_bomb(tmp_path / "bomb.jsonl.zst", 16, blank)
    m = run_committed(settings(max_blank_bytes="1MiB"), [str(bomb)], tmp_path / "o", workers=1)
    assert m["counts"]["rejected"] == {"too_many_blank_bytes": 1} and m["totals"]["rows"] == 1
    (q,) = quarantine(tmp_path / "o")
    assert q["line"] == 2 and "max_blank_bytes 1048576" in q["message"] and "was not read" in q["message"]


def test_a_split_jsonl_file_is_limited_per_chunk(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(json.dumps(GOOD).encode() + b"\n" + b"\n" * (3 << 20) + json.dumps(LAST).encode() + b"\n")
    m = run_committed(settings(max_blank_bytes="1MiB", chunk_size="8MiB"), [str(src)], tmp_path / "o", workers=1)
    assert m["counts"]["rejected"] == {"too_many_blank_bytes": 1}
    assert "bytes 0-" in quarantine(tmp_path / "o")[0]["message"]
    under = run_committed(settings(max_blank_bytes="4MiB"), [str(src)], tmp_path / "o2", workers=1)
    assert under["counts"]["rejected"] == {} and under["totals"]["rows"] == 2  # blank lines under it: skipped


def test_a_gib_newline_bomb_costs_the_limit_not_its_size(tmp_path):
    """The issue's case: 1 GiB of "\\n" in a 32 KB .zst took 18 s (10 s here) with the default settings."""
    bomb = newline_bomb(tmp_path / "bomb.jsonl.zst", 1024)
    assert bomb.stat().st_size < 40_000
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "sftdata.cli", "run", "--input", str(bomb), "--output",
                        str(tmp_path / "o"), "--no-audit", "--workers", "1"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    took = time.perf_counter() - started
    assert r.returncode == 0, r.stderr
    assert "too_many_blank_bytes" in r.stdout and took < 8, (took, r.stdout)


def test_a_json_file_too_large_to_load_is_refused_before_anything_is_written(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [GOOD] * 50)
    (tmp_path / "b.json").write_text(json.dumps([GOOD] * 400))  # about 40 KB, over 16 x 2 KiB
    out = tmp_path / "o"
    with pytest.raises(InputError) as info:
        run_pipeline(settings(max_record_bytes=2048), [str(tmp_path / "a.jsonl"), str(tmp_path / "b.json")], out)
    assert "b.json" in str(info.value) and "JSON Lines" in str(info.value) and "\n" not in str(info.value)
    assert not out.exists() or list(out.iterdir()) == []  # no _chunks/, no shard of a.jsonl


def test_a_compressed_json_file_too_large_is_quarantined_and_the_run_goes_on(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [GOOD] * 5)
    big = tmp_path / "b.json.zst"
    big.write_bytes(zstandard.ZstdCompressor().compress(json.dumps([GOOD] * 400).encode()))
    m = run_committed(settings(max_record_bytes=2048), [str(tmp_path / "a.jsonl"), str(big)], tmp_path / "o")
    assert m["counts"]["rejected"] == {"json_too_large": 1} and m["totals"]["rows"] == 5
    assert "b.json.zst" in quarantine(tmp_path / "o")[0]["message"]


def _binary_parquet(path: Path, content: bytes) -> Path:
    message = pa.struct([("role", pa.binary()), ("content", pa.binary())])
    rows = [[{"role": b"user", "content": b"q"}, {"role": b"assistant", "content": content}]]
    pq.write_table(pa.table({"messages": pa.array(rows, type=pa.list_(message))}), path)
    return path


def test_binary_parquet_columns_are_read_as_utf8_text(tmp_path):
    text = "une r\u00e9ponse \u2713".encode()
    binary = _binary_parquet(tmp_path / "bin.parquet", text)
    write_jsonl(tmp_path / "same.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                        {"role": "assistant", "content": text.decode()}]}])
    a = run_committed(settings(), [str(binary)], tmp_path / "a")
    b = run_committed(settings(), [str(tmp_path / "same.jsonl")], tmp_path / "b")
    assert a["counts"]["rejected"] == {} and a["totals"] == b["totals"]
    rows = [pa.ipc.open_stream(pa.memory_map(str(tmp_path / o / m["shards"][0]["file"]))).read_all()
            .select(["input_ids", "labels"]).to_pylist() for o, m in (("a", a), ("b", b))]
    assert rows[0] == rows[1]  # the same tokens as the text record (ids differ: they name the file)


def test_binary_values_that_are_not_utf8_are_rejected_with_their_place(tmp_path):
    binary = _binary_parquet(tmp_path / "bin.parquet", b"\xff\xfe")
    write_jsonl(tmp_path / "good.jsonl", [GOOD])
    m = run_committed(settings(), [str(binary), str(tmp_path / "good.jsonl")], tmp_path / "o")
    assert m["counts"]["rejected"] == {"invalid_utf8": 1} and m["totals"]["rows"] == 1
    q = quarantine(tmp_path / "o")[0]
    assert q["message"].startswith("/messages/1/content: a binary value that is not UTF-8") and "\\xff" in q["original"]


@pytest.mark.parametrize("size", ["1B", "1000", "0.5KiB"])
def test_a_tiny_chunk_size_is_refused(size):
    with pytest.raises(ConfigError) as info:
        settings(chunk_size=size)
    assert info.value.errors[0].startswith("chunk_size: at least 1024 bytes"), info.value.errors
    assert settings(chunk_size="1KiB").chunk_size == 1024


def test_a_datasets_folder_with_a_missing_file_is_refused_naming_it(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{}")
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    r = subprocess.run([sys.executable, "-m", "sftdata.cli", "run", "--input", str(folder), "--output",
                        str(tmp_path / "o"), "--no-audit"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "data-00000-of-00001.arrow, which is missing" in r.stderr and "--resume" not in r.stderr
    assert not (tmp_path / "o" / "_chunks").exists()
