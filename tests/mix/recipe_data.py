"""A mix's inputs for the tests: three sources in three formats, built from ``tests.synth`` records."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import write_jsonl
from tests.synth import generate_broken_lines, generate_records


def _sharegpt(rec: dict) -> dict:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return {"id": rec["id"], "conversations": [{"from": names[m["role"]], "value": m["content"]}
                                               for m in rec["messages"]]}


def _single_turn(rec: dict) -> dict:
    user = next(m["content"] for m in rec["messages"] if m["role"] == "user")
    reply = next(m["content"] for m in rec["messages"] if m["role"] == "assistant")
    return {"instruction": user, "input": "", "output": reply}


def build(d: Path, *, seed: int = 7, eval_fraction: float = 0.05, budget: int = 30_000) -> Path:
    """Write the three sources, a decontamination file and a recipe into ``d``; returns the recipe."""
    chat = generate_records(240, seed=1, tools=False)
    plain = [r for r in generate_records(400, seed=2, tools=False) if all(m["role"] in ("system", "user", "assistant")
                                                                          for m in r["messages"])]
    for r in plain:
        r["id"] = "sg-" + r["id"]
    share = [_sharegpt(r) for r in plain[:200]]
    alpaca = [_single_turn(r) for r in generate_records(120, seed=3, tools=False)]
    share.append(_sharegpt({"id": "sg-copy", "messages": chat[5]["messages"]}))  # a copy across sources
    write_jsonl(d / "chat.jsonl", [*chat, *(b for b, _ in generate_broken_lines(6, seed=4))])
    (d / "share.json").write_text(json.dumps(share), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(alpaca), d / "alpaca.parquet")
    write_jsonl(d / "bench.jsonl", [chat[10], chat[11], {"id": "b", "messages": plain[3]["messages"]}])
    recipe = d / "mix.yaml"
    recipe.write_text(f"""\
seed: {seed}
sources:
  - name: chat
    input: {d / 'chat.jsonl'}
    take: {{tokens: {budget}}}
  - name: share
    input: [{d / 'share.json'}]
    format: sharegpt
    take: {{fraction: 0.5}}
  - name: alpaca
    input: {d / 'alpaca.parquet'}
    format: alpaca
    take: {{repeat: 2.5}}
split:
  eval: {{fraction: {eval_fraction}}}
  per_source: true
  decontaminate: [{d / 'bench.jsonl'}]
stages:
  read: {{chunk_size: 16KiB}}
  validate: {{dedupe: exact}}
  write: {{shard_size: 64KiB}}
""", encoding="utf-8")
    return recipe
