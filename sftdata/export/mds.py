"""``mds`` export: MosaicML streaming MDS shards of LLM Foundry's pre-tokenized ``turns`` samples.

Why this split: LLM Foundry's finetuning collator does not take a -100-masked copy; each sample is
``{"turns": [{"input_ids": context, "labels": response}, ...]}`` and the collator concatenates
``context + response`` per turn, training the responses that ``target_responses`` selects
(default ``last``; ``all`` trains every turn, which is what keeps the loss equal to ours). So each
conversation is cut at its trained runs: a turn's response is one run of trained labels and its
context is everything since the previous run. Untrained tokens after the last trained run (a row
truncated inside a user turn) reach no loss and are left out; their count is in the manifest.

The files follow streaming's ``MDSWriter`` layout (read from mosaicml-streaming 0.13.0), written
here so export does not need that package: a shard is ``uint32 samples``, ``uint32 offsets[n+1]``,
the JSON config, then per sample ``uint32 size`` + the JSON bytes of the ``turns`` column;
``index.json`` lists the shards (format version 2, no compression, no hashes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sftdata.constants import IGNORE_INDEX
from sftdata.export.commit import write_json
from sftdata.export.options import ExportOptions
from sftdata.export.source import Rows, Source, iter_rows
from sftdata.stages.write.arrow import atomic_write_bytes

SIZE_LIMIT = 1 << 26
COLUMN = "turns"


def _config() -> dict:
    return {"version": 2, "format": "mds", "compression": None, "hashes": [], "size_limit": SIZE_LIMIT,
            "column_names": [COLUMN], "column_encodings": ["json"], "column_sizes": [None]}


def split_turns(ids: np.ndarray, labels: np.ndarray) -> tuple[list[dict], int]:
    """(context, response) turns of one conversation, and how many trailing untrained tokens were left out."""
    trained = labels != IGNORE_INDEX
    edges = np.flatnonzero(np.diff(np.concatenate([[0], trained.astype(np.int8), [0]])))
    starts, ends = edges[0::2], edges[1::2]
    turns, prev = [], 0
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        turns.append({"input_ids": ids[prev:s].tolist(), "labels": ids[s:e].tolist()})
        prev = e
    return turns, len(ids) - prev


def encode_shard(samples: list[bytes], config_bytes: bytes) -> bytes:
    n = len(samples)
    sizes = np.array([0] + [len(s) for s in samples], dtype=np.int64).cumsum()
    offsets = (sizes + 4 + 4 * (n + 1) + len(config_bytes)).astype(np.uint32)
    return np.uint32(n).tobytes() + offsets.tobytes() + config_bytes + b"".join(samples)


class MDSShards:
    """Buffers encoded samples and closes a shard at ``SIZE_LIMIT`` bytes, as ``MDSWriter`` does."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config = _config()
        self.config_bytes = json.dumps(self.config, sort_keys=True).encode()
        self.shards: list[dict] = []
        self.samples: list[bytes] = []
        self.size = 0

    def add(self, turns: list[dict]) -> None:
        datum = json.dumps(turns).encode()
        sample = np.array([len(datum)], np.uint32).tobytes() + datum
        if self.samples and self.size + len(sample) + 4 > SIZE_LIMIT:
            self.flush()
        self.samples.append(sample)
        self.size += len(sample) + 4

    def flush(self) -> None:
        if not self.samples:
            return
        name = f"shard.{len(self.shards):05}.mds"
        data = encode_shard(self.samples, self.config_bytes)
        atomic_write_bytes(self.folder / name, data)
        self.shards.append({"samples": len(self.samples), "zip_data": None,
                            "raw_data": {"basename": name, "bytes": len(data), "hashes": {}}, **self.config})
        self.samples, self.size = [], 0

    def finish(self) -> None:
        self.flush()
        write_json(self.folder / "index.json", {"version": 2, "shards": self.shards})


def write_mds(source: Source, folder: Path, opts: ExportOptions) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    shards = MDSShards(folder)
    counts = {"rows": 0, "conversations": 0, "tokens": 0, "trained_tokens": 0, "turns": 0, "left_out_tail_tokens": 0}
    rows: Rows
    for _, rows in iter_rows(source):
        seg = rows.segments
        for c in range(len(seg) - 1):
            ids, labels = rows.input_ids[seg[c]:seg[c + 1]], rows.labels[seg[c]:seg[c + 1]]
            turns, tail = split_turns(ids, labels)
            shards.add(turns)
            counts["rows"] += 1
            counts["conversations"] += 1
            counts["turns"] += len(turns)
            counts["tokens"] += len(ids) - tail
            counts["trained_tokens"] += sum(len(t["labels"]) for t in turns)
            counts["left_out_tail_tokens"] += tail
    shards.finish()
    return counts
