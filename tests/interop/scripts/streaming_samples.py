"""Runs inside the mosaicml-streaming venv: read an mds export with ``StreamingDataset`` (the reader
LLM Foundry's finetuning loader uses) and write every sample's ``turns`` back as JSON.

Usage: python streaming_samples.py EXPORT OUT.json
"""

import json
import sys
from importlib.metadata import version
from pathlib import Path

from streaming import StreamingDataset

export, out = sys.argv[1], sys.argv[2]
ds = StreamingDataset(local=export, shuffle=False, batch_size=1)
samples = [ds[i]["turns"] for i in range(len(ds))]
Path(out).write_text(json.dumps({"samples": samples, "streaming": version("mosaicml-streaming")}))
