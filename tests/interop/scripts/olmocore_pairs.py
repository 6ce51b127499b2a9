"""Runs inside the OLMo-core venv: read an olmo-core export with ``NumpyPaddedFSLDataset`` (one
instance per document, boundaries from the export's metadata) and ``get_labels``.

Usage: python olmocore_pairs.py EXPORT SEQUENCE_LENGTH WORK_DIR OUT.json

Writes the (instance, position, target token) pairs that reach the loss and the versions.
"""

import json
import os
import sys
from pathlib import Path

os.environ["OLMO_DATA_PREP_USE_ARRAY_IF_LOCAL"] = "metadata"

from importlib.metadata import version  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from olmo_core.data.numpy_dataset import NumpyPaddedFSLDataset  # noqa: E402
from olmo_core.data.utils import get_labels  # noqa: E402

export, seq_len, work, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
manifest = json.loads((export / "export_manifest.json").read_text())["counts"]["train"]
ds = NumpyPaddedFSLDataset(
    *[str(export / f) for f in manifest["token_files"]], sequence_length=seq_len, pad_token_id=128004,
    eos_token_id=128009, vocab_size=128256, dtype=np.uint32,
    label_mask_paths=[str(export / f) for f in manifest["label_mask_files"]])
ds.work_dir = work
ds.prepare()
pairs, mismatched = [], 0
for i in range(len(ds)):
    item = ds[i]
    batch = {k: v.unsqueeze(0) for k, v in item.items() if isinstance(v, torch.Tensor)}
    labels = get_labels(batch)[0]  # labels[p] is the target of position p, i.e. the token at p + 1
    for p in torch.nonzero(labels != -100).flatten().tolist():
        pairs.append([i, p + 1, int(labels[p])])
        mismatched += int(batch["input_ids"][0, p + 1]) != int(labels[p])
Path(out).write_text(json.dumps({"pairs": pairs, "instances": len(ds), "mismatched": mismatched,
                                 "olmo_core": version("ai2-olmo-core"), "torch": torch.__version__}))
