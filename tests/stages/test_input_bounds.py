"""Hostile and broken inputs cost bounded memory and time, and fail per file with the cause (issue 14)."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from sftdata.config import ConfigError, load_pipeline, settings_from_dict
from sftdata.stages.read.jsonl import InputError, read_lines
from sftdata.stages.records import Reject
from tests.conftest import ROOT, run_committed, settings, write_jsonl


def quarantine(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]


GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def zstd_bomb(path: Path, mib: int) -> None:
    """``mib`` MiB of one byte, no line end, compressed at the highest ratio (~32 KB per GiB)."""
    c = zstandard.ZstdCompressor(level=19).compressobj()
    block = b"x" * (1 << 20)
    path.write_bytes(b"".join(c.compress(block) for _ in range(mib)) + c.flush())


@pytest.mark.parametrize("kind", ["jsonl_zst", "json_zst"])
def test_zstd_bomb_is_decompressed_with_bounded_memory(tmp_path, kind):
    bomb = tmp_path / "bomb.jsonl.zst"
    zstd_bomb(bomb, 1024)
    assert bomb.stat().st_size < 40_000
    script = textwrap.dedent(f"""
        from sftdata.stages.read.jsonl import Chunk
        from sftdata.stages.read.sources import iter_records
        chunk = Chunk(0, {str(bomb)!r}, "bomb.jsonl.zst", 0, 0, 1, {kind!r})
        reasons = [rej.reason for _, _, _, rej in iter_records(chunk, 64 << 20, 50_000_000)]
        # VmHWM: this process's own peak (ru_maxrss would include the forking pytest's)
        hwm = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:")).split()[1]
        print(reasons, int(hwm) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True).stdout.split()
    assert "'decompressed_too_large']" in out[-2], out
    assert int(out[-1]) < 600, f"peak RSS {out[-1]} MiB under a 50 MB limit"


def test_zstd_reader_returns_bounded_blocks_and_keeps_frames_and_truncation():
    from sftdata.stages.read.compressed import _Zstd

    c = zstandard.ZstdCompressor()
    data = c.compress(b"a" * 3_000_000) + c.compress(b"b\n" * 1000)
    z = _Zstd(io.BytesIO(data))
    parts = []
    while part := z.read(1 << 16):
        assert len(part) <= 1 << 16 and len(z.out) < 8 << 20
        parts.append(part)
    assert b"".join(parts) == b"a" * 3_000_000 + b"b\n" * 1000
    with pytest.raises(EOFError):
        t = _Zstd(io.BytesIO(data[: len(data) // 2]))
        while t.read(1 << 20):
            pass


def test_default_decompression_limit_is_sane_for_a_small_machine():
    assert settings_from_dict({}).max_decompressed_bytes <= 16 << 30


def test_blank_lines_are_skipped_in_runs_not_one_by_one(tmp_path):
    data = b"\n" * 3_000_000 + json.dumps(GOOD).encode() + b"\n" + b" \r\n" * 10 + b"\n" * 5
    got = list(read_lines(io.BufferedReader(io.BytesIO(data), 1 << 20), 1, None, 1 << 20))
    assert len(got) <= 200
    assert sum(r.lines for r in got) == 3_000_016
    record = [r for r in got if r.data]
    assert [r.line for r in record] == [3_000_001]
    gz = tmp_path / "blank.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    m = run_committed(settings(), [str(gz)], tmp_path / "o")
    assert m["counts"]["blank_lines"] == 3_000_015 and m["counts"]["records_written"] == 1


def test_blank_runs_respect_chunk_boundaries(tmp_path):
    src = tmp_path / "b.jsonl"
    src.write_bytes((b"\n" * 50_000 + json.dumps(GOOD).encode() + b"\n") * 20)
    m = run_committed(settings(chunk_size=100_000), [str(src)], tmp_path / "o")
    assert m["counts"]["records_written"] == 20 and m["counts"]["blank_lines"] == 1_000_000


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['version: 1', 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="expands to more than"):
        load_pipeline(bomb)
    many = tmp_path / "aliases.yaml"
    many.write_text("version: 1\nx: &x 1\ny: [" + ",".join(["*x"] * 500) + "]\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_pipeline(many)


def test_huge_yaml_and_many_problems_are_bounded(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("version: 1\n" + "".join(f"key{i}: {'v' * 40}\n" for i in range(60_000)))
    with pytest.raises(ConfigError) as exc:
        load_pipeline(big)
    assert len(exc.value.errors) == 1 and "bytes" in exc.value.errors[0]
    doc = {"version": 1, **{f"k{i}": "x" for i in range(5000)}, "stages": {"render": {"template": "y" * 10_000}}}
    with pytest.raises(ConfigError) as exc:
        settings_from_dict(doc)
    assert len(exc.value.errors) <= 51
    assert all(len(e) <= 300 for e in exc.value.errors)


def test_corrupt_and_truncated_parquet_fail_per_file_and_the_run_goes_on(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [GOOD] * 3)
    table = pa.Table.from_pylist([GOOD] * 200)
    pq.write_table(table, tmp_path / "ok.parquet", row_group_size=50)
    raw = (tmp_path / "ok.parquet").read_bytes()
    (tmp_path / "trunc.parquet").write_bytes(raw[: len(raw) // 2])
    bad = bytearray(raw)
    for i in range(100, 1500):
        bad[i] ^= 0x55
    (tmp_path / "corrupt.parquet").write_bytes(bytes(bad))
    m = run_committed(settings(), [str(good), str(tmp_path / "trunc.parquet"), str(tmp_path / "corrupt.parquet")],
                     tmp_path / "o")
    assert m["counts"]["records_written"] >= 3
    q = {e["source"]: e for e in quarantine(tmp_path / "o") if e["reason"] == "corrupt_input"}
    assert "trunc.parquet" in q and "corrupt.parquet" in q
    assert "trunc.parquet: ArrowInvalid" in q["trunc.parquet"]["message"]


def _dataset(tmp_path: Path) -> Path:
    import datasets

    d = tmp_path / "hf"
    datasets.Dataset.from_list([GOOD] * 4).save_to_disk(str(d))
    return d


@pytest.mark.parametrize("edit, words", [
    (lambda s: "{not json", "not a valid `datasets` state.json"),
    (lambda s: json.dumps({**s, "_data_files": [{"filename": "../../x.arrow"}]}), "plain file inside the folder"),
    (lambda s: json.dumps({**s, "_data_files": s["_data_files"] * 2}), "listed twice"),
    (lambda s: json.dumps({**s, "_data_files": "data.arrow"}), "must be a list"),
])
def test_malformed_state_json_is_a_clean_error_naming_the_file(tmp_path, edit, words):
    d = _dataset(tmp_path)
    state = d / "state.json"
    state.write_text(edit(json.loads(state.read_text())))
    with pytest.raises(InputError, match=words) as exc:
        run_committed(settings(), [str(d)], tmp_path / "o")
    assert str(state) in str(exc.value)


def test_a_corrupt_arrow_file_of_a_dataset_folder_is_quarantined(tmp_path):
    d = _dataset(tmp_path)
    arrow = next(d.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:40])
    m = run_committed(settings(), [str(d)], tmp_path / "o")
    assert m["counts"]["rejected"] == {"corrupt_input": 1}
    assert arrow.name in quarantine(tmp_path / "o")[0]["message"]


def test_duplicate_keys_are_rejected_lines_and_arrays(tmp_path):
    dup = '{"messages": [{"role": "user", "content": "q", "role": "assistant"}, {"role": "assistant", "content": "a"}]}'
    escaped = {"messages": [{"role": "user", "content": 'say {"a": 1, "a": 2}'},
                            {"role": "assistant", "content": "ok"}]}
    src = write_jsonl(tmp_path / "d.jsonl", [dup, escaped])
    m = run_committed(settings(), [str(src)], tmp_path / "o")
    assert m["counts"]["rejected"] == {"duplicate_key": 1} and m["counts"]["records_written"] == 1
    assert "'role' appears twice" in quarantine(tmp_path / "o")[0]["message"]
    arr = tmp_path / "a.json"
    arr.write_text("[" + dup + "," + json.dumps(escaped) + "]")
    m = run_committed(settings(), [str(arr)], tmp_path / "o2")
    assert m["counts"]["rejected"] == {"duplicate_key": 1} and m["counts"]["records_written"] == 1
    assert quarantine(tmp_path / "o2")[0]["line"] == 1


def test_bom_in_the_middle_and_cr_only_line_ends_get_a_hint(tmp_path):
    line = json.dumps(GOOD).encode()
    src = tmp_path / "cat.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + line + b"\n\xef\xbb\xbf" + line + b"\n")
    run_committed(settings(), [str(src)], tmp_path / "o")
    (q,) = quarantine(tmp_path / "o")
    assert q["line"] == 2 and "byte-order mark" in q["message"]
    cr = tmp_path / "mac.jsonl"
    cr.write_bytes(line + b"\r" + line + b"\r")
    run_committed(settings(), [str(cr)], tmp_path / "o2")
    assert "CR-only" in quarantine(tmp_path / "o2")[0]["message"]
    big = tmp_path / "macbig.jsonl"
    big.write_bytes((line + b"\r") * 2000)
    run_committed(settings(max_record_bytes=4096), [str(big)], tmp_path / "o3")
    (q,) = quarantine(tmp_path / "o3")
    assert q["reason"] == "record_too_large" and "CR-only" in q["message"]


@pytest.mark.parametrize("fmt, rec", [
    ("messages", GOOD),
    ("text", {"text": "<|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|><|start_header_id|>assistant"
                      "<|end_header_id|>\n\na<|eot_id|>"}),
    ("prompt_completion", {"prompt": "q", "completion": "a"}),
])
def test_empty_and_boolean_ids_are_refused(tmp_path, fmt, rec):
    src = write_jsonl(tmp_path / "i.jsonl", [{**rec, "id": ""}, {**rec, "id": True}, {**rec, "id": 7}])
    m = run_committed(settings(input_format=fmt), [str(src)], tmp_path / "o")
    assert m["counts"]["records_written"] == 1
    assert m["counts"]["rejected"] == {"wrong_value": 1, "wrong_type": 1}
    q = quarantine(tmp_path / "o")
    assert [e["id"] for e in q] == ["i.jsonl:1", "i.jsonl:2"]
    assert "found true" in q[1]["message"]


def test_text_too_long_for_max_length_is_refused_before_tokenizing(tokenizer, monkeypatch):
    from sftdata.stages.encode import PieceEncoder, max_token_chars
    from sftdata.stages.render import SPECIAL, TRAINED

    assert max_token_chars(tokenizer) == 128
    enc = PieceEncoder(tokenizer, 8192)
    pieces = [(SPECIAL, "<|begin_of_text|>"), (TRAINED, "word " * 220_000)]

    def never(_text):
        raise AssertionError("tokenized a record that cannot fit")

    monkeypatch.setattr(tokenizer, "encode_text", never)
    monkeypatch.setattr(tokenizer, "encode_text_bytes", never)  # what the piece encoder calls
    with pytest.raises(Reject) as exc:
        enc.encode(pieces)
    assert exc.value.reason == "too_long" and "before tokenizing" in exc.value.message


def test_a_long_record_that_can_fit_is_still_tokenized(tokenizer):
    from sftdata.stages.encode import PieceEncoder
    from sftdata.stages.render import SPECIAL, TRAINED

    # 128 * 100 characters of spaces are 100 tokens: at the bound, encoded and kept
    got = PieceEncoder(tokenizer, 101).encode([(SPECIAL, "<|begin_of_text|>"), (TRAINED, " " * 12_800)])
    assert len(got.input_ids) == 101
