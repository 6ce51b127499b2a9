"""Auditing token data that other tools prepared (issue 18): no manifest, their columns, their bugs.

The data is made here by the real tools where they install (TRL's ``SFTTrainer`` preparation,
transformers' ``DataCollatorForLanguageModeling``) and by our own renderer for the cases no tool
here produces on demand (two dates, shifted labels, packed rows); every failing case is a
realistic corruption of passing data, so each test fails if its rule stops catching it.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sftdata.audit import run_audit
from sftdata.audit.command import audit_cmd
from sftdata.audit.integrity import AuditError
from sftdata.constants import IGNORE_INDEX
from sftdata.pipeline import render_source_rows
from sftdata.tokenizer import load_tokenizer
from tests.conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "schemas" / "audit-report.schema.json").read_text())
MANIFEST_ONLY = ("shard_integrity", "manifest_counts", "tokenizer_fingerprint", "max_length", "max_rejected_fraction")


def records(n: int = 6) -> list[dict]:
    rng = np.random.default_rng(18)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "seven"]
    out = []
    for i in range(n):
        q = " ".join(rng.choice(words, size=int(rng.integers(2, 6))))
        a = " ".join(rng.choice(words, size=int(rng.integers(1, 8)))).capitalize() + "."
        msgs = [{"role": "user", "content": f"Question {i}: {q}?"}, {"role": "assistant", "content": a}]
        if i % 2:
            msgs = [{"role": "system", "content": "Answer in one line."}, *msgs,
                    {"role": "user", "content": "And again?"}, {"role": "assistant", "content": a.upper()}]
        out.append({"id": f"rec-{i}", "messages": msgs})
    return out


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("builtin:llama3")


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Rows of our own llama3.2 rendering: (source JSONL, rows with id, input_ids, labels)."""
    src = write_jsonl(tmp_path_factory.mktemp("src") / "records.jsonl", records())
    rows = [{"id": rid, "input_ids": [int(x) for x in ids], "labels": [int(x) for x in lab]}
            for rid, ids, lab in render_source_rows([str(src)], {"pipeline": {"template": "llama3.2"}})]
    return src, rows


def write(path: Path, rows: list[dict]) -> Path:
    """Rows as the file type the suffix names (Parquet, JSON Lines, Arrow IPC file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    table = pa.Table.from_pylist(rows)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    return path


def audit(path: Path | str, *args: str) -> tuple[int, dict, str]:
    out = Path(tempfile.mkdtemp(prefix="audit-report-")) / "report.json"  # outside the audited data
    result = CliRunner().invoke(audit_cmd, [str(path), "--json", str(out), *args])
    assert result.exit_code in (0, 1), result.output + repr(result.exception)
    report = json.loads(out.read_text())
    jsonschema.validate(report, SCHEMA)
    return result.exit_code, report, result.output


def failed(report: dict) -> set[str]:
    return {r["name"] for r in report["rules"] if r["status"] == "fail"}


def hits(report: dict, rule: str) -> list[dict]:
    return [v for v in report["violations"] if v["rule"] == rule]


# ------------------------------------------------------------------------------------------- TRL


@pytest.fixture(scope="module")
def trl_prepared(tmp_path_factory):
    """TRL's own preparation: SFTTrainer with assistant_only_loss and the official Llama-3
    template, which TRL swaps for its ``{% generation %}`` training template; saved to disk."""
    pytest.importorskip("trl")
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from trl.chat_template_utils import llama3_chat_template

    from sftdata.tokenizer import _convert_builtin
    from sftdata.training.tiny_model import build_tiny_llama3

    hf = AutoTokenizer.from_pretrained(str(_convert_builtin()))
    hf.chat_template = llama3_chat_template
    base = tmp_path_factory.mktemp("trl")
    ds = datasets.Dataset.from_list([{"messages": r["messages"]} for r in records()])
    args = SFTConfig(output_dir=str(base / "out"), assistant_only_loss=True, report_to=[], max_length=None,
                     use_cpu=True, bf16=False)
    trainer = SFTTrainer(model=build_tiny_llama3(), args=args, train_dataset=ds, processing_class=hf)
    assert "{% generation %}" in trainer.chat_template  # TRL's training template, not ours
    trainer.train_dataset.save_to_disk(str(base / "train"))
    return base / "train", trainer.train_dataset, hf


def test_trl_assistant_only_loss_dataset_passes(trl_prepared):
    folder, ds, _ = trl_prepared
    code, report, output = audit(folder, "--junit", str(folder.parent / "junit.xml"))
    assert code == 0, output
    junit = (folder.parent / "junit.xml").read_text()
    assert junit.count('<skipped message="no manifest"') == len(MANIFEST_ONLY)
    assert report["input"]["kind"] == "datasets Dataset" and report["input"]["parts"][0]["labels_column"] == "labels"
    assert report["stats"]["rows"] == len(ds) and report["stats"]["trained_tokens"] == sum(
        sum(x != IGNORE_INDEX for x in row) for row in ds["labels"])
    skipped = {r["name"]: r["skip_reason"] for r in report["rules"] if r["status"] == "skip"}
    assert all(skipped[r] == "no manifest" for r in MANIFEST_ONLY)
    assert "skip (no manifest)" in output


def test_trl_eot_label_removed_fails(trl_prepared, tmp_path, tok):
    _, ds, _ = trl_prepared
    rows = [dict(r) for r in ds.remove_columns("messages")]
    victim = rows[3]
    at = max(i for i, (t, lab) in enumerate(zip(victim["input_ids"], victim["labels"], strict=True))
             if t == tok.eot_id and lab != IGNORE_INDEX)
    victim["labels"] = [IGNORE_INDEX if i == at else x for i, x in enumerate(victim["labels"])]
    code, report, output = audit(write(tmp_path / "trl.parquet", rows))
    assert code == 1 and failed(report) == {"eot_trained"}, output
    [hit] = hits(report, "eot_trained")
    assert (hit["row"], hit["position"], hit["id"]) == (3, at, "3")


def test_trl_truncated_rows_fail_cut_off(trl_prepared, tmp_path):
    """What TRL's ``truncation_mode='keep_start'`` does to a row longer than max_length."""
    _, ds, _ = trl_prepared
    rows = [dict(r) for r in ds.remove_columns("messages")]
    long_row = max(range(len(rows)), key=lambda k: len(rows[k]["input_ids"]))
    rows[long_row] = {k: v[:-3] for k, v in rows[long_row].items()}  # inside its last answer
    code, report, _ = audit(write(tmp_path / "cut.jsonl", rows))
    assert code == 1 and failed(report) == {"turn_cut_off"}
    assert [v["row"] for v in hits(report, "turn_cut_off")] == [long_row]


def test_trl_dataset_dict_audits_each_split(trl_prepared, tmp_path, tok):
    import datasets

    _, ds, _ = trl_prepared
    bad = ds.map(lambda r: {"labels": [x if x != tok.eot_id else IGNORE_INDEX for x in r["labels"]]})
    datasets.DatasetDict({"train": ds, "test": bad}).save_to_disk(str(tmp_path / "dd"))
    code, report, _ = audit(tmp_path / "dd")
    assert code == 1 and report["input"]["kind"] == "datasets DatasetDict"
    assert {p["name"].split("/")[0] for p in report["input"]["parts"]} == {"train", "test"}
    assert {v["shard"].split("/")[0] for v in report["violations"]} == {"test"}
    assert len(hits(report, "eot_trained")) == len(ds)


def old_completion_only_collate(hf, batch_rows: list[list[int]], response_template: str) -> dict:
    """What TRL's removed ``DataCollatorForCompletionOnlyLM`` (TRL <= 0.19) did: pad with the HF LM
    collator, then mask everything up to the response template; where the template's ids are not
    found it only warned and masked the whole example."""
    from transformers import DataCollatorForLanguageModeling

    batch = DataCollatorForLanguageModeling(hf, mlm=False)([{"input_ids": r} for r in batch_rows])
    template = hf.encode(response_template, add_special_tokens=False)
    for i in range(len(batch["labels"])):
        ids = batch["input_ids"][i].tolist()
        starts = [k for k in range(len(ids)) if ids[k:k + len(template)] == template]
        if not starts:  # TRL: warnings.warn("Could not find response key ... This instance will be ignored")
            batch["labels"][i, :] = IGNORE_INDEX
        else:
            batch["labels"][i, :starts[0] + len(template)] = IGNORE_INDEX
    return batch


def collated_rows(batches: list[dict]) -> list[dict]:
    return [{"input_ids": b["input_ids"][i].tolist(), "labels": b["labels"][i].tolist(),
             "attention_mask": b["attention_mask"][i].tolist()} for b in batches for i in range(len(b["input_ids"]))]


def test_chatml_response_template_on_llama3_data_fails_nothing_trained(trl_prepared, tmp_path):
    _, ds, hf = trl_prepared
    ids = ds["input_ids"]
    batches = [old_completion_only_collate(hf, ids[k:k + 2], "<|im_start|>assistant\n") for k in range(0, len(ids), 2)]
    code, report, output = audit(write(tmp_path / "chatml.parquet", collated_rows(batches)))
    assert code == 1
    assert {"all_labels_masked", "row_has_trained_tokens"} <= failed(report)
    assert report["stats"]["trained_tokens"] == 0 and "every label is -100" in output


def test_llama3_response_template_without_instruction_template_trains_later_prompts(trl_prepared, tmp_path):
    """The old collator with the right Llama-3 marker but no instruction_template masks only up to
    the first answer: every later user turn of a multi-turn row is trained."""
    _, ds, hf = trl_prepared
    ids = ds["input_ids"]
    marker = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    batches = [old_completion_only_collate(hf, ids[k:k + 2], marker) for k in range(0, len(ids), 2)]
    code, report, _ = audit(write(tmp_path / "first.parquet", collated_rows(batches)))
    multi = [k for k, r in enumerate(ds["messages"]) if len(r) > 2]
    assert code == 1 and "prompt_trained" in failed(report)
    assert sorted(v["row"] for v in hits(report, "prompt_trained")) == multi
    assert all("'And' in the user turn's content" in v["message"] for v in hits(report, "prompt_trained"))


def test_lm_collator_rows_fail_naming_prompt_tokens(trl_prepared, tmp_path):
    from transformers import DataCollatorForLanguageModeling

    _, ds, hf = trl_prepared
    ids = ds["input_ids"]
    lm = DataCollatorForLanguageModeling(hf, mlm=False)
    batches = [lm([{"input_ids": r} for r in ids[k:k + 3]]) for k in range(0, len(ids), 3)]
    code, report, output = audit(write(tmp_path / "lm.parquet", collated_rows(batches)))
    assert code == 1 and "prompt_trained" in failed(report)
    assert len(hits(report, "prompt_trained")) == len(ids)
    assert all("user turn's content" in v["message"] or "system turn's content" in v["message"]
               for v in hits(report, "prompt_trained"))
    # the same collator with the common pad = eos setting also masks every <|eot_id|>
    hf.pad_token = "<|eot_id|>"
    try:
        batches = [lm([{"input_ids": r} for r in ids[k:k + 3]]) for k in range(0, len(ids), 3)]
    finally:
        hf.pad_token = "<|finetune_right_pad_id|>"
    _, report, _ = audit(write(tmp_path / "eos" / "lm.parquet", collated_rows(batches)))
    assert {"prompt_trained", "eot_trained"} <= failed(report)


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


def test_double_bos_from_tokenizing_templated_text(trl_prepared, tmp_path):
    """The classic: apply_chat_template(tokenize=False), then tokenizer(text) adds a second BOS."""
    _, ds, hf = trl_prepared
    rows = []
    for r, lab in zip(ds["messages"], ds["labels"], strict=True):
        ids = hf(hf.apply_chat_template(r, tokenize=False))["input_ids"]
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] + lab})
    code, report, _ = audit(write(tmp_path / "dbl.parquet", rows))
    assert code == 1 and failed(report) == {"double_bos"} and len(hits(report, "double_bos")) == len(rows)


# ------------------------------------------------------------------------------- errors, options


def test_wrong_vocabulary_is_one_clear_error(ours, tmp_path):
    _, rows = ours
    far = [{"input_ids": [x + 130000 for x in r["input_ids"]], "labels": r["labels"]} for r in rows]
    result = CliRunner().invoke(audit_cmd, [str(write(tmp_path / "far.parquet", far))])
    assert result.exit_code == 2 and "outside the vocabulary" in result.output and "--tokenizer" in result.output
    plain = [{"input_ids": [x for x in r["input_ids"] if x < 128000], "labels": r["labels"]} for r in rows]
    result = CliRunner().invoke(audit_cmd, [str(write(tmp_path / "q.parquet", plain))])
    assert result.exit_code == 2 and "no Llama-3 header token" in result.output
    with pytest.raises(AuditError, match="no input_ids"):
        run_audit(write(tmp_path / "x.jsonl", [{"text": "hello"}]))
    result = CliRunner().invoke(audit_cmd, [str(tmp_path / "far.parquet"), "--tokenizer", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "cannot load the tokenizer" in result.output
    from sftdata.tokenizer import _convert_builtin

    code, report, _ = audit(write(tmp_path / "ok.parquet", rows), "--tokenizer", str(_convert_builtin()))
    assert code == 0 and report["tokenizer"]["spec"] == str(_convert_builtin())


def test_glob_of_files_and_options_refused_for_prepared_folders(ours, tmp_path):
    src, rows = ours
    for k in range(3):
        write(tmp_path / "parts" / f"part-{k}.parquet", rows[2 * k:2 * k + 2])
    code, report, _ = audit(f"{tmp_path}/parts/*.parquet")
    assert code == 0 and [p["name"] for p in report["input"]["parts"]] == [f"part-{k}.parquet" for k in range(3)]
    fraction = report["stats"]["trained_fraction"]
    code, report, _ = audit(f"{tmp_path}/parts/*.parquet", "--min-trained-fraction", str(round(fraction + 0.01, 4)))
    assert code == 1 and failed(report) == {"min_trained_fraction"}
    from sftdata.config import settings_from_dict
    from sftdata.runner import run_pipeline

    s = settings_from_dict({})
    s.audit_enabled = False
    run_pipeline(s, [str(src)], tmp_path / "prepared")
    result = CliRunner().invoke(audit_cmd, [str(tmp_path / "prepared"), "--mask-column", "loss_mask"])
    assert result.exit_code == 2 and "only for data without a manifest" in result.output
    (tmp_path / "prepared" / "manifest.json").unlink()  # an unfinished run is not "data without a manifest"
    result = CliRunner().invoke(audit_cmd, [str(tmp_path / "prepared")])
    assert result.exit_code == 2 and "not a finished `sftdata run` output" in result.output


def test_html_report_shows_rows_of_data_without_manifest(ours, tmp_path):
    _, rows = ours
    path = write(tmp_path / "h.parquet", rows)
    result = CliRunner().invoke(audit_cmd, [str(path), "--html", str(tmp_path / "a.html")])
    assert result.exit_code == 0
    html = (tmp_path / "a.html").read_text()
    assert html.count('class="sample"') == 3 and "skip (no manifest)" in html and "tr t" in html


def test_fifo_in_place_of_a_file_does_not_hang(ours, tmp_path):
    """Issue 14: a FIFO where a shard or data file belongs is refused, not opened (open would block)."""
    src, rows = ours
    from sftdata.config import settings_from_dict
    from sftdata.runner import run_pipeline

    s = settings_from_dict({})
    s.audit_enabled = False
    out = tmp_path / "prepared"
    run_pipeline(s, [str(src)], out)
    shard = next(out.glob("shard-*.arrow"))
    shard.unlink()
    os.mkfifo(shard)
    os.mkfifo(tmp_path / "data.parquet")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for target, codes in ((out, (1,)), (tmp_path / "data.parquet", (2,))):
        proc = subprocess.run([sys.executable, "-m", "sftdata.cli", "audit", str(target)], capture_output=True,
                              text=True, timeout=120, env=env)
        assert proc.returncode in codes, proc.stdout + proc.stderr
    assert "not a regular file" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------- --source


def test_source_comparison_names_first_differing_token(ours, tmp_path, tok):
    src, rows = ours
    path = write(tmp_path / "s.parquet", rows)
    code, report, _ = audit(path, "--source", str(src), "--template", "llama3.2")
    assert code == 0 and next(r for r in report["rules"] if r["name"] == "source_match")["status"] == "pass"
    by_order = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    by_order[3]["input_ids"] = by_order[3]["input_ids"][:1] + by_order[3]["input_ids"]  # a second BOS
    by_order[3]["labels"] = [IGNORE_INDEX] + by_order[3]["labels"]
    code, report, _ = audit(write(tmp_path / "o.parquet", by_order), "--source", str(src), "--template", "llama3.2")
    [hit] = hits(report, "source_match")
    assert code == 1 and (hit["row"], hit["position"], hit["id"]) == (3, 1, "rec-3")
    assert "stored '<|begin_of_text|>'" in hit["message"] and "ours '<|start_header_id|>'" in hit["message"]
    code, report, _ = audit(path, "--source", str(src), "--template", "llama3")  # 3.0: no date header
    mism = hits(report, "source_match")
    assert code == 1 and [v["id"] for v in mism] == [r["id"] for r in rows]
    # records without a system message: 3.2 still opens with its dated system turn, 3.0 with the user's
    assert all(v["position"] == 2 and "stored 'system'" in v["message"] and "ours 'user'" in v["message"]
               for v in mism[0::2])
    result = CliRunner().invoke(audit_cmd, [str(path), "--source", str(src)])
    assert result.exit_code == 2 and "--template" in result.output



def test_source_in_another_input_format(ours, tmp_path):
    """--source takes what `sftdata run` reads (format detected): here ShareGPT, matched by order."""
    _, rows = ours
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    share = write_jsonl(tmp_path / "share.jsonl", [
        {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in r["messages"]]} for r in records()])
    unnamed = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    code, report, output = audit(write(tmp_path / "s.parquet", unnamed), "--source", str(share), "--template", "llama3.2")
    assert code == 0 and next(r for r in report["rules"] if r["name"] == "source_match")["status"] == "pass", output
    code, report, _ = audit(write(tmp_path / "short.parquet", unnamed[:-1]), "--source", str(share),
                            "--template", "llama3.2")
    assert code == 1 and [v["message"] for v in hits(report, "source_match")] == [
        "the source record renders but no row matches it"]


# ------------------------------------------------------------------------------------ LLaMA-Factory

LF_PYTHON = Path(os.environ.get("SFTDATA_VENVS", "/root/.cache/sftdata-venvs")) / "llamafactory" / "bin" / "python"
LF_SCRIPT = """
import json, sys
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
tokdir, datadir, out = sys.argv[1:4]
for name, extra in (("default", {}), ("train_on_prompt", {"train_on_prompt": True})):
    args = dict(model_name_or_path=tokdir, stage="sft", do_train=True, dataset="demo", dataset_dir=datadir,
                template="llama3", cutoff_len=1024, output_dir=f"{out}/trainer", overwrite_cache=True,
                report_to="none", use_cpu=True, **extra)
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tm = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
    get_dataset(template, model_args, data_args, training_args, stage="sft", **tm)["train_dataset"].save_to_disk(
        f"{out}/{name}")
"""


@pytest.mark.skipif(not LF_PYTHON.exists(), reason="no LLaMA-Factory venv (tests/interop/build_venvs.sh llamafactory)")
def test_llama_factory_preprocessing(tmp_path):
    """LLaMA-Factory 0.9.5's own SFT preprocessing (template llama3), run in its own venv."""
    from sftdata.tokenizer import _convert_builtin

    data = tmp_path / "data"
    data.mkdir()
    (data / "demo.json").write_text(json.dumps([{"messages": r["messages"]} for r in records()]))
    (data / "dataset_info.json").write_text(json.dumps({"demo": {
        "file_name": "demo.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}}}))
    (tmp_path / "lf.py").write_text(LF_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(LF_PYTHON), str(tmp_path / "lf.py"), str(_convert_builtin()), str(data),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code, report, output = audit(tmp_path / "out" / "default")
    assert code == 0, output
    code, report, _ = audit(tmp_path / "out" / "train_on_prompt")
    assert code == 1 and failed(report) == {"prompt_trained", "trained_outside_assistant"}
    assert len(hits(report, "prompt_trained")) == len(records())


def test_plain_rows_end_token_is_a_target_not_padding(tok):
    """A prepared prompt/completion row may train an end token after its completion: not padding."""
    from sftdata.audit import check_table, rule_context
    from sftdata.audit.report import Violations

    eot_text = tok.token_id("<|end_of_text|>")
    text = tok.encode_text("The capital of France is Paris.")
    ids = [tok.bos_id, *text, eot_text]
    labels = [IGNORE_INDEX, *([IGNORE_INDEX] * 5), *text[5:], eot_text]
    table = pa.table({"id": ["p"], "input_ids": [ids], "labels": [labels], "content_hash": ["x"]})
    for plain, rules in ((True, set()), (False, {"pad_trained", "well_formed_turns", "trained_outside_assistant"})):
        sink = Violations()
        check_table(table, "mem", rule_context(tok, allow_plain=plain), sink)
        assert set(sink.counts) == rules, sink.items
