"""Runs inside the Axolotl venv: load an axolotl export through Axolotl's own config loader,
``load_datasets`` (detection of pre-tokenized rows, its length and zero-label filters) and its
``DataCollatorForSeq2Seq``, as ``axolotl train`` would without sample packing.

Usage: python axolotl_pairs.py EXPORT TOKENIZER_DIR SEQUENCE_LEN WORK_DIR OUT.json

Axolotl may shuffle rows, so each row is written with its tokens: OUT holds, per row, the unpadded
input ids and the (position, target token) pairs that reach the loss after transformers' causal-LM
shift (label p is the target of position p - 1). Axolotl's dataset filters run in spawned worker
processes that re-import this file, hence the ``__main__`` guard.
"""

import json
import os
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import torch
from transformers import LlamaConfig

os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")  # its telemetry retries against an unreachable host

from axolotl.cli.config import load_cfg  # noqa: E402
from axolotl.common.datasets import load_datasets  # noqa: E402
from axolotl.loaders import load_tokenizer  # noqa: E402
from axolotl.utils.collators import DataCollatorForSeq2Seq  # noqa: E402
from axolotl.utils.dict import DictDefault  # noqa: E402


def main() -> None:
    export, tok_dir, seq_len, work, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
    model_dir = work / "tiny-llama3"
    shutil.copytree(tok_dir, model_dir, dirs_exist_ok=True)
    LlamaConfig(vocab_size=128256, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, bos_token_id=128000, eos_token_id=128009).save_pretrained(model_dir)
    config = {
        "base_model": str(model_dir), "datasets": [{"path": export, "type": None}], "sequence_len": seq_len,
        "sample_packing": False, "micro_batch_size": 2, "gradient_accumulation_steps": 1, "num_epochs": 1,
        "learning_rate": 1e-4, "optimizer": "adamw_torch", "output_dir": str(work / "out"),
        "dataset_prepared_path": str(work / "prepared"), "special_tokens": {"pad_token": "<|finetune_right_pad_id|>"},
        "val_set_size": 0.0,
    }
    (work / "config.json").write_text(json.dumps(config))
    cfg = load_cfg(DictDefault(config))
    meta = load_datasets(cfg=cfg)
    tokenizer = load_tokenizer(cfg)
    ds = meta.train_dataset
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, pad_to_multiple_of=64, return_tensors="pt")
    rows = []
    for start in range(0, len(ds), 2):
        features = [ds[i] for i in range(start, min(start + 2, len(ds)))]
        batch = collator(features)
        labels = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[..., 1:]
        for b, f in enumerate(features):
            pairs = [[i + 1, int(labels[b, i])] for i in torch.nonzero(labels[b] != -100).flatten().tolist()]
            assert all(int(batch["input_ids"][b, p]) == t for p, t in pairs)
            rows.append({"input_ids": list(f["input_ids"]), "pairs": pairs})
    Path(out).write_text(json.dumps({"rows": rows, "columns": sorted(ds.column_names), "axolotl": version("axolotl"),
                                     "torch": torch.__version__}))


if __name__ == "__main__":
    main()
