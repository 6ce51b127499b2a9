"""Auditing token data that other tools prepared (issue 18): no manifest, their columns, their bugs.

The data is made here by the real tools where they install (TRL's ``SFTTrainer`` preparation,
transformers' ``DataCollatorForLanguageModeling``) and by our own renderer for the cases no tool
here produces on demand (two dates, shifted labels, packed rows); every failing case is a
realistic corruption of passing data, so each test fails if its rule stops catching it.
"""

from __future__ import annotations

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
    code, report, output = audit(folder)
    assert code == 0, output
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
