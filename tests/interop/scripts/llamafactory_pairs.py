"""Runs inside the LLaMA-Factory venv: load an export through ``get_dataset(tokenized_path=...)`` and
``SFTDataCollatorWith4DAttentionMask``, the objects ``llamafactory.train.sft.workflow`` builds.

Usage: python llamafactory_pairs.py EXPORT TOKENIZER_DIR PACKED(0|1) CUTOFF_LEN OUT.json

Writes the (row, position, target token) pairs that reach the loss (transformers' causal-LM loss
shift: label p is the target of position p - 1), the segment starts that the collator's 4-D
block-diagonal mask implies, the split names, and the installed versions.
"""

import json
import sys
from pathlib import Path

import llamafactory
import torch
import transformers
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.data.collator import SFTDataCollatorWith4DAttentionMask
from llamafactory.hparams import get_train_args
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

export, tok_dir, packed, cutoff, out = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), sys.argv[5]
tokenizer = AutoTokenizer.from_pretrained(tok_dir)
# LLaMA-Factory's own argument parser, as `llamafactory-cli train` runs it: it derives
# block_diag_attn from neat_packing and forces remove_unused_columns off for tokenized_path.
model_args, data_args, training_args, _, _ = get_train_args({
    "model_name_or_path": tok_dir, "stage": "sft", "do_train": True, "finetuning_type": "full",
    "dataset": "ignored_with_tokenized_path", "template": "llama3", "tokenized_path": export, "neat_packing": packed, "packing": packed,
    "cutoff_len": cutoff,
    "output_dir": str(Path(out).parent / "lf-out"), "report_to": "none", "overwrite_output_dir": True})
template = get_template_and_fix_tokenizer(tokenizer, data_args)
module = get_dataset(template, model_args, data_args, training_args, stage="sft", tokenizer=tokenizer)
splits = sorted(k for k, v in module.items() if v is not None)
collator = SFTDataCollatorWith4DAttentionMask(
    template=template, model=None, pad_to_multiple_of=8, label_pad_token_id=-100,
    block_diag_attn=model_args.block_diag_attn, neat_packing=data_args.neat_packing, attn_implementation="eager", compute_dtype=torch.float32, tokenizer=tokenizer)
result = {"splits": splits, "block_diag_attn": model_args.block_diag_attn,
          "remove_unused_columns": training_args.remove_unused_columns, "llamafactory": llamafactory.__version__, "torch": torch.__version__,
          "transformers": transformers.__version__}
for split in ("train_dataset", "eval_dataset"):
    ds = module.get(split)
    if ds is None:
        continue
    pairs, starts, row, mismatched = [], [], 0, 0
    for batch in DataLoader(ds, batch_size=2, shuffle=False, collate_fn=collator):
        # transformers' ForCausalLMLoss: pad labels by one on the right and take labels[..., 1:]
        labels = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[..., 1:]
        for b in range(labels.shape[0]):
            for i in torch.nonzero(labels[b] != -100).flatten().tolist():
                pairs.append([row + b, i + 1, int(labels[b, i])])
                mismatched += int(batch["input_ids"][b, i + 1]) != int(labels[b, i])
            if packed:
                allowed = batch["attention_mask"][b, 0] == 0  # 0.0 = may attend, min = blocked
                n = allowed.shape[-1]
                starts.append([i for i in range(n) if bool(allowed[i, i]) and (i == 0 or not bool(allowed[i, i - 1]))])
        row += labels.shape[0]
    result[split] = {"pairs": pairs, "starts": starts, "rows": row, "mismatched": mismatched,
                     "columns": sorted(ds.column_names)}
Path(out).write_text(json.dumps(result))
