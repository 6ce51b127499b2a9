"""End to end: records in, shards out; nothing lost, deterministic, loadable by datasets/pyarrow/polars."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from sftdata.config import load_pipeline
from sftdata.constants import IGNORE_INDEX
from sftdata.errors import OutputFolderError
from sftdata.runner import run_pipeline
from tests.conftest import settings, write_jsonl
from tests.synth import generate_broken_lines, generate_records

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mixed_input(tmp_path_factory) -> tuple[Path, int, int, dict]:
    """Good records with broken lines and blank lines interleaved."""
    d = tmp_path_factory.mktemp("mixed")
    good = generate_records(300, seed=21, hostile=True)
    broken = generate_broken_lines(40, seed=22)
    lines: list[str] = []
    for i, rec in enumerate(good):
        lines.append(json.dumps(rec, ensure_ascii=False))
        if i % 8 == 0 and broken:
            lines.append(broken.pop()[0])
        if i % 50 == 0:
            lines.append("   ")
    lines.extend(b for b, _ in broken)
    path = d / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    return path, len(good), 40, {"blank": sum(1 for x in lines if not x.strip())}


def test_nothing_lost_and_every_bad_record_quarantined(mixed_input, tmp_path):
    path, n_good, n_bad, info = mixed_input
    s = settings(chunk_size=16 << 10)
    summary = run_pipeline(s, [str(path)], tmp_path / "out", workers=2)
    m = summary.manifest
    c = m["counts"]
    assert c["records_read"] == n_good + n_bad
    assert c["records_written"] + sum(c["rejected"].values()) == c["records_read"]
    assert c["blank_lines"] == info["blank"]
    assert c["records_written"] == n_good
    assert c["special_text_records"] > 0
    q = [json.loads(line) for line in (tmp_path / "out" / "quarantine.jsonl").read_bytes().splitlines()]
    assert len(q) == n_bad
    for entry in q:
        assert {"source", "line", "stage", "reason", "message", "original"} <= entry.keys()
        assert entry["source"] == "mixed.jsonl" and entry["line"] > 0
    assert summary.chunks_total > 3
    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(ds) == n_good
    assert ds.column_names == ["id", "input_ids", "labels", "content_hash", "prompt_hash"]
    row = ds[0]
    assert len(row["input_ids"]) == len(row["labels"])
    assert row["input_ids"][0] == 128000 and row["input_ids"].count(128000) == 1
    assert all(lab in (IGNORE_INDEX, tok) for tok, lab in zip(row["input_ids"], row["labels"], strict=True))
    ids = ds["id"]
    assert ids == [r["id"] for r in generate_records(300, seed=21, hostile=True)]  # input order kept
    import polars as pl

    frames = [pl.read_ipc_stream(tmp_path / "out" / s["file"]) for s in m["shards"]]
    assert sum(f.height for f in frames) == n_good
    assert m["totals"]["tokens"] == sum(len(x) for f in frames for x in f["input_ids"].to_list())
    table = pa.ipc.open_stream(pa.memory_map(str(tmp_path / "out" / m["shards"][0]["file"]))).read_all()
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())


def test_workers_do_not_change_a_byte(mixed_input, tmp_path):
    path, *_ = mixed_input
    outs = []
    for w in (1, 2):
        out = tmp_path / f"w{w}"
        run_pipeline(settings(chunk_size=16 << 10, shard_size=64 << 10), [str(path)], out, workers=w)
        outs.append(out)
    files = sorted(p.name for p in outs[0].iterdir())
    assert files == sorted(p.name for p in outs[1].iterdir())
    assert sum(1 for f in files if f.endswith(".arrow")) > 3
    for name in files:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_non_empty_output_is_refused_and_left_untouched(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", generate_records(5, seed=1))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="not empty"):
        run_pipeline(settings(), [str(src)], out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(OutputFolderError, match="did not write"):  # --overwrite deletes only what sftdata wrote
        run_pipeline(settings(), [str(src)], out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_truncation_drop_and_truncate(tmp_path):
    recs = generate_records(60, seed=4)
    src = write_jsonl(tmp_path / "a.jsonl", recs)
    dropped = run_pipeline(settings(max_length=128), [str(src)], tmp_path / "d").manifest
    kept = run_pipeline(settings(max_length=128, truncation="truncate"), [str(src)], tmp_path / "t").manifest
    assert dropped["counts"]["rejected"].get("too_long", 0) > 0
    assert kept["counts"]["truncated_records"] > 0
    assert kept["counts"]["records_written"] > dropped["counts"]["records_written"]
    truncated = (tmp_path / "t" / "truncated_ids.jsonl").read_bytes().splitlines()
    assert len(truncated) == kept["counts"]["truncated_records"] == kept["files"]["truncated_ids.jsonl"]["lines"]
    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "t"))
    assert max(len(x) for x in ds["input_ids"]) <= 128


def test_json_array_bom_and_crlf_inputs(tmp_path):
    recs = generate_records(6, seed=8)
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps(recs))
    crlf = tmp_path / "b.jsonl"
    crlf.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(json.dumps(r).encode() for r in recs) + b"\r\n")
    m = run_pipeline(settings(), [str(arr), str(crlf)], tmp_path / "o").manifest
    assert m["counts"]["records_written"] == 12 and not m["counts"]["rejected"]


def test_oversized_line_is_quarantined_without_stopping(tmp_path):
    recs = generate_records(4, seed=2)
    big = {"messages": [{"role": "user", "content": "x" * 300_000}, {"role": "assistant", "content": "ok"}]}
    src = write_jsonl(tmp_path / "a.jsonl", [recs[0], big, *recs[1:]])
    m = run_pipeline(settings(max_record_bytes=100_000), [str(src)], tmp_path / "o").manifest
    assert m["counts"]["rejected"] == {"record_too_large": 1}
    assert m["counts"]["records_written"] == 4
    q = json.loads((tmp_path / "o" / "quarantine.jsonl").read_text())
    assert q["line"] == 2 and len(q["original"]) < 1000


def test_shipped_pipelines_load():
    for name in ("llama3", "llama3.1", "llama3.2", "demo"):
        s = load_pipeline(ROOT / "pipelines" / f"{name}.yaml")
        assert s.template == ("llama3.2" if name == "demo" else name)


def test_pipeline_errors_are_reported_together(tmp_path):
    from sftdata.config import ConfigError

    bad = tmp_path / "p.yaml"
    bad.write_text("stages:\n  render: {template: llama4, colour: red}\n  label: {max_length: -1}\nextra: 1\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(bad)
    text = str(info.value)
    assert len(info.value.errors) == 4
    for word in ("llama4", "colour", "max_length", "extra"):
        assert word in text
    unsafe = tmp_path / "u.yaml"
    unsafe.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_pipeline(unsafe)


def test_run_audits_at_the_end_and_source_rerender_matches(mixed_input, tmp_path):
    from click.testing import CliRunner

    from sftdata.cli import main

    path, *_ = mixed_input
    out = tmp_path / "o"
    runner = CliRunner()
    res = runner.invoke(main, ["run", "--input", str(path), "--output", str(out), "--workers", "2",
                               "--chunk-size", "16KiB"])
    assert res.exit_code == 0, res.output
    audit = json.loads((out / "audit.json").read_text())
    assert audit["ok"] is True
    res = runner.invoke(main, ["audit", str(out), "--source", str(path)])
    assert res.exit_code == 0, res.output
