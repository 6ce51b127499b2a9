"""Auditing token files in other tools' layouts (issue 18): mask columns, shifted labels, packed
rows (position_ids, torchtune, Megatron-Bridge), MDS and OLMo-core files, padding, double BOS.

The rows are our own rendering of generated records, laid out as each tool stores them; each
failing case corrupts one row of passing data, and the test checks that row is the one named.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sftdata.audit.command import audit_cmd
from sftdata.constants import IGNORE_INDEX
from sftdata.process.rerender import render_source_rows
from tests.conftest import write_jsonl
from tests.foreign_data import audit, failed, hits, records, write

# -------------------------------------------------------------------------- our rendering, varied


def test_two_dates_fail_the_date_rule(tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", records())
    rows = []
    for date, cut in (("26 Jul 2024", 4), ("02 Dec 2026", 6)):
        rendered = list(render_source_rows([str(src)], {"pipeline": {"template": "llama3.2", "date_string": date}}))
        rows += [{"id": rid, "input_ids": ids.tolist(), "labels": lab.tolist()} for rid, ids, lab in rendered][len(rows):cut]
    code, report, _ = audit(write(tmp_path / "dates.parquet", rows))
    assert code == 1 and failed(report) == {"date_consistent"}
    assert [v["id"] for v in hits(report, "date_consistent")] == ["rec-4", "rec-5"]
    assert "'02 Dec 2026'" in hits(report, "date_consistent")[0]["message"]
    one_date = [r for r in rows if r["id"] not in ("rec-4", "rec-5")]
    assert audit(write(tmp_path / "one.parquet", one_date))[0] == 0


def shift(rows: list[dict]) -> list[dict]:
    """torchtune's convention: labels[i] is the target for position i, i.e. input_ids[i + 1]."""
    return [dict(r, labels=r["labels"][1:] + [IGNORE_INDEX]) for r in rows]


def test_shifted_labels_detected_and_checked_unshifted(ours, tmp_path, tok):
    _, rows = ours
    path = write(tmp_path / "tt.parquet", shift(rows))
    code, report, output = audit(path)
    assert code == 0, output
    part = report["input"]["parts"][0]
    assert part["shifted"] and part["shift_detected"] and "shifted by one (detected)" in output
    assert failed(audit(path, "--unshifted")[1]) >= {"label_matches_input"}
    moved = shift(rows)
    lab = moved[2]["labels"]
    first = next(i for i, x in enumerate(lab) if x != IGNORE_INDEX)
    lab[first - 1], lab[first] = lab[first], IGNORE_INDEX  # the answer starts one token early
    code, report, _ = audit(write(tmp_path / "moved.parquet", moved))
    assert code == 1 and {v["row"] for v in report["violations"]} == {2}


@pytest.mark.parametrize("suffix,column,kind", [(".parquet", "loss_mask", bool), (".jsonl", "assistant_masks", int),
                                                (".arrow", "labels_mask", int)])
def test_mask_columns_detected(ours, tmp_path, suffix, column, kind):
    _, rows = ours
    masked = [{"input_ids": r["input_ids"], column: [kind(x != IGNORE_INDEX) for x in r["labels"]]} for r in rows]
    code, report, _ = audit(write(tmp_path / f"m{suffix}", masked))
    assert code == 0 and report["input"]["parts"][0]["mask_column"] == column
    masked[1][column][-1] = kind(0)  # the last answer's <|eot_id|>
    code, report, _ = audit(write(tmp_path / "bad" / f"m{suffix}", masked))
    assert code == 1 and failed(report) == {"eot_trained"} and hits(report, "eot_trained")[0]["row"] == 1


def test_rolled_mask_detected_and_explicit_columns(ours, tmp_path):
    """Megatron's rolled loss_mask (mask[i] says whether input_ids[i + 1] is a target), and both
    a labels and a mask column present, with the one to use named."""
    _, rows = ours
    both = [{"input_ids": r["input_ids"], "labels": [IGNORE_INDEX] * len(r["labels"]),
             "loss_mask": [int(x != IGNORE_INDEX) for x in r["labels"][1:]] + [0]} for r in rows]
    path = write(tmp_path / "both.parquet", both)
    assert "all_labels_masked" in failed(audit(path)[1])  # labels first by default
    code, report, _ = audit(path, "--mask-column", "loss_mask")
    assert code == 0 and report["input"]["parts"][0]["shift_detected"]
    result = CliRunner().invoke(audit_cmd, [str(path), "--mask-column", "nope"])
    assert result.exit_code == 2 and "no column 'nope'" in result.output


def pack_rows(rows: list[dict]) -> list[dict]:
    out = []
    for a, b in zip(rows[0::2], rows[1::2], strict=True):
        out.append({"input_ids": a["input_ids"] + b["input_ids"], "labels": a["labels"] + b["labels"],
                    "position_ids": list(range(len(a["input_ids"]))) + list(range(len(b["input_ids"])))})
    return out


def test_packed_rows_by_position_ids(ours, tmp_path, tok):
    _, rows = ours
    packed = pack_rows(rows)
    code, report, _ = audit(write(tmp_path / "p.parquet", packed))
    assert code == 0 and report["stats"]["packed"] and report["stats"]["conversations"] == len(rows)
    second = len(rows[2]["input_ids"])
    packed[1]["labels"][second] = tok.bos_id  # trains the second conversation's BOS
    code, report, _ = audit(write(tmp_path / "bad.parquet", packed))
    assert code == 1 and failed(report) == {"trained_outside_assistant"}
    assert [(v["row"], v["position"]) for v in report["violations"]] == [(1, second)]


def test_torchtune_and_megatron_packed_layouts(ours, tmp_path, tok):
    """The layouts `sftdata export` writes for them: torchtune packs pad to max_seq_len (pad id,
    labels -100, padding as a last seq_lens entry, input_pos running on); Megatron-Bridge has
    seq_start_id and a loss_mask rolled to the label position."""
    _, rows = ours
    pad, width = tok.token_id("<|finetune_right_pad_id|>"), 400
    tt = []
    for row in pack_rows(rows):
        n, first = len(row["input_ids"]), row["position_ids"].index(0, 1)
        tt.append({"tokens": row["input_ids"] + [pad] * (width - n), "labels": row["labels"] + [IGNORE_INDEX] * (width - n),
                   "input_pos": row["position_ids"] + list(range(n - first, n - first + width - n)),
                   "seq_lens": [first, n - first, width - n]})
    code, report, _ = audit(write(tmp_path / "tt" / "packed.parquet", tt))
    assert code == 0 and report["stats"]["conversations"] == len(rows)
    assert report["input"]["parts"][0]["padding_stripped"] == sum(width - len(r["input_ids"]) for r in pack_rows(rows))
    tt[2]["labels"][-1] = pad  # a trained pad token survives the stripping and is named
    code, report, _ = audit(write(tmp_path / "tt2" / "packed.parquet", tt))
    assert code == 1 and failed(report) == {"pad_trained"} and hits(report, "pad_trained")[0]["row"] == 2
    mg = []
    for row in pack_rows(rows):
        first = row["position_ids"].index(0, 1)
        mask = [int(x != IGNORE_INDEX) for x in row["labels"]]
        rolled = [*mask[1:first], 0, *mask[first + 1:], 0]  # per conversation, last position 0
        mg.append({"input_ids": row["input_ids"], "loss_mask": rolled, "seq_start_id": [0, first]})
    (tmp_path / "mg").mkdir()
    (tmp_path / "mg" / "p.idx.metadata.json").write_text(json.dumps({"max_samples_per_bin": 2}))  # beside it
    write(tmp_path / "mg" / "p.idx.parquet", mg)
    code, report, output = audit(tmp_path / "mg")
    assert code == 0, output
    part = report["input"]["parts"][0]
    assert part["mask_column"] == "loss_mask" and part["shift_detected"] and report["stats"]["conversations"] == len(rows)


def write_mds(folder: Path, rows: list[dict]) -> None:
    """LLM Foundry ``turns`` samples in streaming's MDS layout (uint32 n, offsets, config, samples)."""
    samples = []
    for r in rows:
        ids, lab = np.asarray(r["input_ids"]), np.asarray(r["labels"])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (lab != IGNORE_INDEX).astype(np.int8), [0]])))
        turns, prev = [], 0
        for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
            turns.append({"input_ids": ids[prev:a].tolist(), "labels": ids[a:b].tolist()})
            prev = b
        datum = json.dumps(turns).encode()
        samples.append(np.uint32(len(datum)).tobytes() + datum)
    config = json.dumps({"version": 2, "format": "mds", "compression": None, "column_names": ["turns"],
                         "column_encodings": ["json"], "column_sizes": [None]}).encode()
    start = 4 + 4 * (len(samples) + 1) + len(config)
    offs = np.cumsum([start] + [len(x) for x in samples]).astype(np.uint32)
    folder.mkdir(parents=True)
    (folder / "shard.00000.mds").write_bytes(np.uint32(len(samples)).tobytes() + offs.tobytes() + config + b"".join(samples))
    (folder / "index.json").write_text(json.dumps({"version": 2, "shards": [{
        "format": "mds", "compression": None, "column_names": ["turns"], "column_encodings": ["json"],
        "raw_data": {"basename": "shard.00000.mds"}, "samples": len(samples)}]}))


def write_olmo(folder: Path, rows: list[dict], bounds: bool) -> None:
    """OLMo-core's raw memmaps: uint32 ids, a bool mask aligned with them, start,end per document."""
    folder.mkdir(parents=True)
    ids = np.concatenate([np.asarray(r["input_ids"], np.uint32) for r in rows])
    np.concatenate([np.asarray(r["labels"]) != IGNORE_INDEX for r in rows]).tofile(folder / "labels_mask_part_0000.npy")
    ids.tofile(folder / "token_ids_part_0000.npy")
    if bounds:
        ends = np.cumsum([len(r["input_ids"]) for r in rows])
        with gzip.open(folder / "token_ids_part_0000.csv.gz", "wt") as f:
            f.writelines(f"{a},{b}\n" for a, b in zip([0, *ends[:-1]], ends, strict=True))


@pytest.mark.parametrize("fmt", ["mds", "olmo", "olmo-without-bounds"])
def test_mds_and_olmo_core_files(ours, tmp_path, fmt):
    _, rows = ours
    bad = [dict(r) for r in rows]
    lab = list(bad[4]["labels"])
    lab[max(i for i, x in enumerate(lab) if x != IGNORE_INDEX)] = IGNORE_INDEX  # the last <|eot_id|>
    bad[4] = dict(bad[4], labels=lab)
    for name, data in (("good", rows), ("bad", bad)):
        if fmt == "mds":
            write_mds(tmp_path / name, data)
        else:
            write_olmo(tmp_path / name, data, bounds=fmt == "olmo")
    code, report, output = audit(tmp_path / "good")
    assert code == 0, output
    assert report["stats"]["conversations"] == len(rows) and report["stats"]["trained_tokens"] == sum(
        sum(x != IGNORE_INDEX for x in r["labels"]) for r in rows)
    code, report, _ = audit(tmp_path / "bad")
    # MDS keeps no untrained tail after the last response: the closer is gone, the row ends cut off
    assert code == 1 and failed(report) == {"turn_cut_off" if fmt == "mds" else "eot_trained"}
    assert {v["row"] for v in report["violations"]} == {4}


def test_double_bos_and_trained_padding(ours, tmp_path, tok):
    _, rows = ours
    pad = tok.token_id("<|finetune_right_pad_id|>")
    bad = [dict(r) for r in rows]
    bad[0] = {"input_ids": [tok.bos_id, *rows[0]["input_ids"]], "labels": [IGNORE_INDEX, *rows[0]["labels"]]}
    bad[1] = {"input_ids": rows[1]["input_ids"] + [pad] * 3, "labels": rows[1]["labels"] + [pad] * 3}
    code, report, _ = audit(write(tmp_path / "b.jsonl", [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in bad]))
    assert code == 1
    assert [(v["row"], v["position"]) for v in hits(report, "double_bos")] == [(0, 1)]
    assert [(v["row"], v["position"]) for v in hits(report, "pad_trained")] == [(1, len(rows[1]["input_ids"]))]
    assert "3 trailing padding token(s) trained, first '<|finetune_right_pad_id|>'" in hits(report, "pad_trained")[0]["message"]
    assert not hits(report, "single_bos") and not hits(report, "trained_outside_assistant")
