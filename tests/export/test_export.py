"""`sftdata export`: each target's layout, read back with pyarrow/datasets, trains the same tokens as our shards."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sftdata.cli import main
from sftdata.errors import ExportError
from sftdata.export.core import export_folder
from tests.conftest import load
from tests.interop.harness import (
    conversation_starts,
    conversations,
    expected_pairs,
    make_prepared,
    read_prepared,
)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("exp"), "plain", packed=False, n=60)


@pytest.fixture(scope="module")
def packed_run(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("exp"), "packed", packed=True, n=60)


def hf_pairs(ds) -> set:
    """What HF-style trainers train: the model shifts, so label p (p >= 1) is the target of position p - 1."""
    return {(r, p, int(t)) for r, row in enumerate(ds["labels"]) for p, t in enumerate(row) if p >= 1 and t != -100}


@pytest.mark.parametrize("target", ["hf", "axolotl"])
def test_hf_and_axolotl_have_exactly_the_three_columns(plain_run, tmp_path, target):
    ds = load(export_folder(plain_run, target, tmp_path / "o") and tmp_path / "o")
    assert ds.column_names == ["input_ids", "attention_mask", "labels"]
    assert all(set(m) == {1} and len(m) == len(i) for m, i in zip(ds["attention_mask"], ds["input_ids"], strict=True))
    assert hf_pairs(ds) == expected_pairs(plain_run, per_conversation=False)
    assert [list(r["input_ids"]) for r in read_prepared(plain_run)] == ds["input_ids"]


def test_packed_rows_to_a_repacking_target_are_refused_then_unpacked_on_request(packed_run, tmp_path):
    res = CliRunner().invoke(main, ["export", str(packed_run), "--to", "axolotl", "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--unpack" in res.output
    assert not (tmp_path / "o").exists()
    export_folder(packed_run, "axolotl", tmp_path / "o", unpack=True)
    ds = load(tmp_path / "o")
    convs = conversations(packed_run)
    assert len(ds) == len(convs) > len(read_prepared(packed_run))
    assert ds["input_ids"] == [list(c["input_ids"]) for c in convs]
    assert hf_pairs(ds) == expected_pairs(packed_run, per_conversation=True)


def test_llama_factory_packed_rows_have_segment_ids_and_restarting_positions(packed_run, tmp_path):
    export_folder(packed_run, "llama-factory", tmp_path / "o")
    ds = load(tmp_path / "o")
    assert ds.column_names == ["input_ids", "attention_mask", "labels", "position_ids"]
    manifest = json.loads((packed_run / "manifest.json").read_text())
    width, pad = manifest["pipeline"]["max_length"] + 1, manifest["tokenizer"]["pad_id"]
    for row, starts, src in zip(ds, conversation_starts(packed_run), read_prepared(packed_run), strict=True):
        n = len(src["input_ids"])
        mask, pos = np.array(row["attention_mask"]), np.array(row["position_ids"])
        assert len(mask) == len(pos) == len(row["input_ids"]) == width  # padded to cutoff_len + 1
        assert row["input_ids"][:n] == list(src["input_ids"]) and set(row["input_ids"][n:]) == {pad}
        assert set(mask[n:]) == {0} and set(pos[n:]) == {0} and set(row["labels"][n:]) == {-100}
        assert list(np.flatnonzero(pos[:n] == 0)) == starts
        assert list(np.flatnonzero(np.diff(mask[:n], prepend=0))) == starts
        assert list(np.unique(mask[:n])) == list(range(1, len(starts) + 1))
    assert hf_pairs(ds) == expected_pairs(packed_run, per_conversation=False)


def test_llama_factory_validation_folder_becomes_a_dataset_dict(plain_run, packed_run, tmp_path):
    manifest = export_folder(plain_run, "llama-factory", tmp_path / "o", validation=packed_run, unpack=True)
    dd = load(tmp_path / "o")
    assert sorted(dd) == ["train", "validation"]
    assert len(dd["validation"]) == len(conversations(packed_run))
    assert hf_pairs(dd["train"]) == expected_pairs(plain_run, per_conversation=False)
    assert hf_pairs(dd["validation"]) == expected_pairs(packed_run, per_conversation=True)
    assert manifest["counts"]["validation"]["conversations"] == len(conversations(packed_run))


def torchtune_pairs(ds) -> set:
    """torchtune 0.6.1 recipes shift the batch labels: labels[i + 1] is the target of position i."""
    return {(r, p, int(t)) for r, row in enumerate(ds["labels"]) for p, t in enumerate(row) if p >= 1 and t != -100}


def test_torchtune_packed_rows_follow_packed_dataset_padding(packed_run, tmp_path):
    export_folder(packed_run, "torchtune", tmp_path / "o")
    ds = load(tmp_path / "o")
    max_len = json.loads((packed_run / "manifest.json").read_text())["pipeline"]["max_length"]
    pad = json.loads((packed_run / "manifest.json").read_text())["tokenizer"]["pad_id"]
    for row, src in zip(ds, read_prepared(packed_run), strict=True):
        n = len(src["input_ids"])
        assert len(row["tokens"]) == len(row["labels"]) == len(row["input_pos"]) == max_len
        assert sum(row["seq_lens"]) == max_len
        assert row["seq_lens"] == src["seq_lengths"] + ([max_len - n] if n < max_len else [])
        assert row["tokens"][:n] == list(src["input_ids"]) and set(row["tokens"][n:]) <= {pad}
        assert set(row["labels"][n:]) <= {-100}
        tail = row["input_pos"][n:]
        assert tail == [min(row["input_pos"][n - 1] + 1 + k, max_len - 1) for k in range(len(tail))]
    assert torchtune_pairs(ds) == expected_pairs(packed_run, per_conversation=False)


def test_torchtune_builder_shifts_per_conversation_only_when_asked(packed_run, tmp_path):
    from sftdata.integrations.torchtune import prepared

    export_folder(packed_run, "torchtune", tmp_path / "o")
    with pytest.raises(ValueError, match="packed: true"):
        prepared(None, path=str(tmp_path / "o"), shift_labels=False)
    plain = prepared(None, path=str(tmp_path / "o"), packed=True, shift_labels=False)
    shifted = prepared(None, path=str(tmp_path / "o"), packed=True, shift_labels=True)
    want = expected_pairs(packed_run, per_conversation=False)
    got = set()
    for r in range(len(shifted)):
        a, b = plain[r]["labels"].tolist(), shifted[r]["labels"].tolist()
        ends = set(np.cumsum(plain[r]["seq_lens"].tolist()) - 1)
        assert b == [-100 if i in ends else a[i + 1] for i in range(len(a))]
        got |= {(r, i + 1, t) for i, t in enumerate(b) if t != -100}
    assert got == want


def megatron_pairs(table: pa.Table) -> set:
    """Megatron-Bridge per conversation: tokens = ids[s:e-1], labels = ids[s+1:e], loss_mask = mask[s:e-1]."""
    pairs = set()
    for r, (ids, mask, starts) in enumerate(zip(*(table.column(c).to_pylist()
                                                  for c in ("input_ids", "loss_mask", "seq_start_id")), strict=True)):
        bounds = starts + [len(ids)]
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            for i in range(s, e - 1):
                if mask[i]:
                    pairs.add((r, i + 1, ids[i + 1]))
    return pairs


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_megatron_bridge_mask_is_rolled_to_the_label_position(plain_run, packed_run, tmp_path, packed):
    src = packed_run if packed else plain_run
    manifest = export_folder(src, "megatron-bridge", tmp_path / "o")
    files = manifest["counts"]["train"]["files"]
    assert files and all(f.endswith(".idx.parquet") for f in files)
    table = pa.concat_tables(pq.read_table(tmp_path / "o" / f) for f in files)
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("loss_mask").type == pa.list_(pa.int8())
    assert megatron_pairs(table) == expected_pairs(src, per_conversation=False)
    meta = json.loads((tmp_path / "o" / "packing_metadata.json").read_text())
    rows = read_prepared(src)
    if packed:
        assert meta[0]["max_samples_per_bin"] == max(len(r["seq_lengths"]) for r in rows)
        assert meta[0]["min_packed_seqlen"] == min(len(r["input_ids"]) for r in rows)
    assert meta[0]["dataset_max_seqlen"] == max(max(r["seq_lengths"]) for r in rows)


def test_parquet_keeps_every_prepared_column(packed_run, tmp_path):
    manifest = export_folder(packed_run, "parquet", tmp_path / "o")
    table = pa.concat_tables(pq.read_table(tmp_path / "o" / f) for f in manifest["counts"]["train"]["files"])
    prepared = json.loads((packed_run / "manifest.json").read_text())
    assert table.column_names == prepared["columns"]
    assert table.column("input_ids").to_pylist() == [list(r["input_ids"]) for r in read_prepared(packed_run)]


def test_export_manifest_records_source_sha_target_and_counts(plain_run, tmp_path):
    import hashlib

    manifest = export_folder(plain_run, "hf", tmp_path / "o")
    on_disk = json.loads((tmp_path / "o" / "export_manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk["target"] == "hf"
    assert on_disk["sources"]["train"]["manifest_sha256"] == \
        hashlib.sha256((plain_run / "manifest.json").read_bytes()).hexdigest()
    totals = json.loads((plain_run / "manifest.json").read_text())["totals"]
    c = on_disk["counts"]["train"]
    assert (c["rows"], c["tokens"], c["trained_tokens"]) == (totals["rows"], totals["tokens"], totals["trained_tokens"])


def test_non_empty_output_is_refused_unless_overwrite(plain_run, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_folder(plain_run, "hf", out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(ExportError, match="did not write"):  # --overwrite replaces only an earlier export
        export_folder(plain_run, "hf", out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    export_folder(plain_run, "hf", out)
    with pytest.raises(ExportError, match="not empty"):
        export_folder(plain_run, "parquet", out)
    export_folder(plain_run, "parquet", out, overwrite=True)
    assert json.loads((out / "export_manifest.json").read_text())["target"] == "parquet"
    assert not list(out.glob("*.arrow"))  # the hf export's files went with it
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_not_a_prepared_folder_and_a_failed_audit_exit_2_with_nothing_written(plain_run, tmp_path):
    import shutil

    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["export", str(tmp_path / "empty"), "--to", "hf", "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "manifest.json" in res.output
    bad = tmp_path / "bad"
    shutil.copytree(plain_run, bad)
    shard = json.loads((bad / "manifest.json").read_text())["shards"][0]["file"]
    table = pa.ipc.open_stream(pa.BufferReader((bad / shard).read_bytes())).read_all()  # no mmap: rewritten below
    labels = table.column("labels").to_pylist()
    labels[0] = list(table.column("input_ids").to_pylist()[0])  # train the prompt too
    table = table.set_column(table.column_names.index("labels"), "labels", pa.array(labels, pa.list_(pa.int32())))
    with pa.OSFile(str(bad / shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    res = CliRunner().invoke(main, ["export", str(bad), "--to", "hf", "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "fails the audit" in res.output
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(main, ["export", str(bad), "--to", "hf", "--output", str(tmp_path / "o"), "--skip-audit"])
    assert res.exit_code == 0, res.output
    assert load(tmp_path / "o")["labels"][0][1:] == labels[0][1:]


def test_failed_write_leaves_no_output(plain_run, tmp_path, monkeypatch):
    import sftdata.export.hf as hf

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf, "hf_table", boom)
    monkeypatch.setattr(hf, "streamed_plain_table", boom)  # the plain rows' (streamed) table
    res = CliRunner().invoke(main, ["export", str(plain_run), "--to", "hf", "--output", str(tmp_path / "o")])
    assert res.exit_code == 1 and "disk full" in res.output  # the one OSError policy: a full disk fails the work
    assert list(tmp_path.iterdir()) == []


def read_mds(folder) -> list[list[dict]]:
    """Decode MDS shards by streaming's layout: uint32 n, uint32 offsets[n+1], config, samples."""
    index = json.loads((folder / "index.json").read_text())
    samples = []
    for shard in index["shards"]:
        data = (folder / shard["raw_data"]["basename"]).read_bytes()
        n = int(np.frombuffer(data[:4], np.uint32)[0])
        offsets = np.frombuffer(data[4:4 * (n + 2)], np.uint32)
        assert n == shard["samples"] and shard["column_encodings"] == ["json"]
        for a, b in zip(offsets[:-1], offsets[1:], strict=True):
            size = int(np.frombuffer(data[a:a + 4], np.uint32)[0])
            assert size == b - a - 4
            samples.append(json.loads(data[a + 4:b]))
    return samples


def test_mds_turns_split_each_conversation_at_its_trained_runs(plain_run, tmp_path):
    manifest = export_folder(plain_run, "mds", tmp_path / "o")
    samples = read_mds(tmp_path / "o")
    convs = conversations(plain_run)
    assert len(samples) == len(convs)
    pairs, tail = set(), 0
    for r, (turns, conv) in enumerate(zip(samples, convs, strict=True)):
        # LLM Foundry stitches context + response per turn and, with target_responses: all, trains every response
        ids = []
        for t in turns:
            assert t["labels"]  # every turn has a response
            ids += t["input_ids"]
            pairs |= {(r, len(ids) + k, tok) for k, tok in enumerate(t["labels"])}
            ids += t["labels"]
        assert ids == list(conv["input_ids"][:len(ids)])
        tail += len(conv["input_ids"]) - len(ids)
    assert pairs == expected_pairs(plain_run, per_conversation=True)
    assert manifest["counts"]["train"]["left_out_tail_tokens"] == tail
