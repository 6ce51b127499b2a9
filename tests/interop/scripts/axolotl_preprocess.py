"""Runs inside the Axolotl venv: Axolotl's own dataset preprocessing of a messages JSONL with
``type: chat_template``, ``chat_template: llama3`` and ``roles_to_train: ["assistant"]``, no
packing, as ``axolotl preprocess`` would; each processed train dataset is saved with
``save_to_disk`` for ``sftdata audit`` to read.

Usage: python axolotl_preprocess.py RECORDS.jsonl TOKENIZER_DIR WORK_DIR NAME=TRAIN_ON_EOS,... OUT.json

Each ``NAME=VALUE`` (comma-separated) is one entry of the config's ``datasets`` (the same records each time): VALUE is
its ``train_on_eos`` (``default`` leaves it out, so Axolotl's own default applies). One
``load_datasets`` call prepares them all (Axolotl's start-up and worker spawns are most of the
time); merged datasets are not shuffled, so entry k is rows k*n .. k*n+n-1 and row k*n+i is record
i. Each entry's rows are saved to ``WORK_DIR/<NAME>``; OUT holds the columns, the row count, the
``train_on_eos`` each entry ended with and the version.
Axolotl's dataset filters run in spawned worker processes that re-import this file, hence the
``__main__`` guard.
"""

import json
import os
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

from transformers import LlamaConfig

os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")  # its telemetry retries against an unreachable host

from axolotl.cli.config import load_cfg  # noqa: E402
from axolotl.common.datasets import load_datasets  # noqa: E402
from axolotl.utils.dict import DictDefault  # noqa: E402


def main() -> None:
    records, tok_dir, work, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[5]
    runs = [arg.split("=", 1) for arg in sys.argv[4].split(",")]
    model_dir = work / "tiny-llama3"
    shutil.copytree(tok_dir, model_dir, dirs_exist_ok=True)
    LlamaConfig(vocab_size=128256, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, bos_token_id=128000, eos_token_id=128009).save_pretrained(model_dir)
    datasets = []
    for _, train_on_eos in runs:
        dataset = {"path": records, "ds_type": "json", "type": "chat_template", "chat_template": "llama3",
                   "field_messages": "messages", "roles_to_train": ["assistant"]}
        if train_on_eos != "default":
            dataset["train_on_eos"] = train_on_eos
        datasets.append(dataset)
    config = {
        "base_model": str(model_dir), "datasets": datasets, "chat_template": "llama3", "sequence_len": 2048,
        "sample_packing": False, "micro_batch_size": 2, "gradient_accumulation_steps": 1, "num_epochs": 1,
        "learning_rate": 1e-4, "optimizer": "adamw_torch", "output_dir": str(work / "out"),
        "dataset_prepared_path": str(work / "prepared"), "shuffle_merged_datasets": False, "dataset_num_proc": 1,
        "special_tokens": {"pad_token": "<|finetune_right_pad_id|>"}, "val_set_size": 0.0,
    }
    cfg = load_cfg(DictDefault(config))
    ds = load_datasets(cfg=cfg).train_dataset
    n = sum(1 for line in open(records, encoding="utf-8") if line.strip())
    assert len(ds) == n * len(runs), (len(ds), n, len(runs))  # nothing filtered: each run is one block of n rows
    result = {"axolotl": version("axolotl"), "columns": sorted(ds.column_names), "rows": n, "runs": {}}
    for k, (name, _) in enumerate(runs):
        ds.select(range(k * n, (k + 1) * n)).save_to_disk(str(work / name))
        result["runs"][name] = cfg.datasets[k].get("train_on_eos")
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
