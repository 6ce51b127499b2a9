"""Auditing what the real tools prepare (issue 18): TRL's ``SFTTrainer`` preparation, the old
completion-only collator, transformers' LM collator, LLaMA-Factory's preprocessing.

Each tool makes the data here, from the same generated records; each failing case is what that
tool does with a common setting, so every test fails if its rule stops catching it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sftdata.constants import IGNORE_INDEX
from tests.foreign_data import MANIFEST_ONLY, audit, failed, hits, records, write

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
    model = build_tiny_llama3()
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=hf)
    assert "{% generation %}" in trainer.chat_template  # TRL's training template, not ours
    trainer.train_dataset.save_to_disk(str(base / "train"))
    # and again with TRL's own truncation: max_length two tokens short of the longest row
    longest = max(len(r) for r in trainer.train_dataset["input_ids"])
    short = SFTConfig(output_dir=str(base / "out2"), assistant_only_loss=True, report_to=[], max_length=longest - 2,
                      truncation_mode="keep_start", use_cpu=True, bf16=False)
    cut = SFTTrainer(model=model, args=short, train_dataset=ds, processing_class=hf).train_dataset
    cut.save_to_disk(str(base / "cut"))
    return base / "train", trainer.train_dataset, hf, (base / "cut", longest - 2)


def test_trl_assistant_only_loss_dataset_passes(trl_prepared):
    folder, ds, _, _ = trl_prepared
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
    _, ds, _, _ = trl_prepared
    rows = [dict(r) for r in ds.remove_columns("messages")]
    victim = rows[3]
    at = max(i for i, (t, lab) in enumerate(zip(victim["input_ids"], victim["labels"], strict=True))
             if t == tok.eot_id and lab != IGNORE_INDEX)
    victim["labels"] = [IGNORE_INDEX if i == at else x for i, x in enumerate(victim["labels"])]
    code, report, output = audit(write(tmp_path / "trl.parquet", rows))
    assert code == 1 and failed(report) == {"eot_trained"}, output
    [hit] = hits(report, "eot_trained")
    assert (hit["row"], hit["position"], hit["id"]) == (3, at, "3")


def test_trl_truncated_rows_fail_cut_off(trl_prepared):
    """TRL's ``truncation_mode='keep_start'`` with max_length two tokens short of the longest row:
    the rows it cuts end inside their last answer, without the <|eot_id|>."""
    _, ds, _, (folder, limit) = trl_prepared
    code, report, _ = audit(folder)
    longer = [k for k, r in enumerate(ds["input_ids"]) if len(r) > limit]
    assert code == 1 and failed(report) == {"turn_cut_off"} and longer
    assert [v["row"] for v in hits(report, "turn_cut_off")] == longer


def test_trl_dataset_dict_audits_each_split(trl_prepared, tmp_path, tok):
    import datasets

    _, ds, _, _ = trl_prepared
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
    _, ds, hf, _ = trl_prepared
    ids = ds["input_ids"]
    batches = [old_completion_only_collate(hf, ids[k:k + 2], "<|im_start|>assistant\n") for k in range(0, len(ids), 2)]
    code, report, output = audit(write(tmp_path / "chatml.parquet", collated_rows(batches)))
    assert code == 1
    assert {"all_labels_masked", "row_has_trained_tokens"} <= failed(report)
    assert report["stats"]["trained_tokens"] == 0 and "every label is -100" in output


def test_llama3_response_template_without_instruction_template_trains_later_prompts(trl_prepared, tmp_path):
    """The old collator with the right Llama-3 marker but no instruction_template masks only up to
    the first answer: every later user turn of a multi-turn row is trained."""
    _, ds, hf, _ = trl_prepared
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

    _, ds, hf, _ = trl_prepared
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


def test_double_bos_from_tokenizing_templated_text(trl_prepared, tmp_path):
    """The classic: apply_chat_template(tokenize=False), then tokenizer(text) adds a second BOS."""
    _, ds, hf, _ = trl_prepared
    rows = []
    for r, lab in zip(ds["messages"], ds["labels"], strict=True):
        ids = hf(hf.apply_chat_template(r, tokenize=False))["input_ids"]
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] + lab})
    code, report, _ = audit(write(tmp_path / "dbl.parquet", rows))
    assert code == 1 and failed(report) == {"double_bos"} and len(hits(report, "double_bos")) == len(rows)


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
