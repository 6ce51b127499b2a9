"""Runs inside the torchtune venv: load an export through torchtune's own collators and recipe shift.

Usage: python torchtune_pairs.py EXPORT PACKED(0|1) [SPLIT] OUT.json  (SPLIT of a DatasetDict export; default train)

Writes the (row, position, target token) pairs that reach the loss, where the recipe computes the
loss exactly as ``recipes/full_finetune_single_device.py`` does (read from the installed file), the
segment starts implied by the block-causal mask that ``padded_collate_packed`` builds, and the
installed versions.
"""

import json
import sys
from functools import partial
from pathlib import Path

import torch
import torchtune
from torch.utils.data import DataLoader
from torchtune.data import padded_collate_packed, padded_collate_sft

from sftdata.integrations.torchtune import dataset_shifts_labels, prepared

export, packed, out = sys.argv[1], sys.argv[2] == "1", sys.argv[-1]
split = sys.argv[3] if len(sys.argv) == 5 else "train"
recipe = Path(torchtune.__file__).resolve().parent.parent / "recipes" / "full_finetune_single_device.py"
recipe_src = recipe.read_text()
recipe_shifts = "labels[..., 1:], self.ignore_labels_cache" in recipe_src
assert recipe_shifts != dataset_shifts_labels(), "exactly one of dataset and recipe must shift"

ds = prepared(None, path=export, packed=packed, split=split)
collate = padded_collate_packed if packed else partial(padded_collate_sft, padding_idx=128004, ignore_idx=-100)
loader = DataLoader(ds, batch_size=3, shuffle=False, collate_fn=collate)
pairs, starts, row, mismatched = [], [], 0, 0
for batch in loader:
    tokens, labels = batch["tokens"], batch["labels"]
    if recipe_shifts:  # the recipe's own line: torch.hstack((labels[..., 1:], ignore_labels_cache))
        ignore = torch.full((labels.shape[0], 1), -100, dtype=labels.dtype)
        labels = torch.hstack((labels[..., 1:], ignore))
    for b in range(labels.shape[0]):
        # logits at position i predict labels[i], i.e. the token at position i + 1
        for i in torch.nonzero(labels[b] != -100).flatten().tolist():
            target = int(labels[b, i])
            pairs.append([row + b, i + 1, target])
            mismatched += int(tokens[b, i + 1]) != target
        if packed:
            mask = batch["mask"][b]
            if not isinstance(mask, torch.Tensor):
                mask = mask.to_dense()[0, 0] if hasattr(mask, "to_dense") else mask
            mask = mask.bool()
            n = mask.shape[-1]
            starts.append([i for i in range(n) if i == 0 or not bool(mask[i, i - 1])])
    row += labels.shape[0]
Path(out).write_text(json.dumps({"pairs": pairs, "starts": starts, "rows": row, "mismatched": mismatched,
                                 "recipe_shifts": recipe_shifts, "torchtune": torchtune.__version__,
                                 "torch": torch.__version__}))
