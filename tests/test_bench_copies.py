"""The benchmarks' input rule (``benchmarks/bench_copies.py``): copies differ in the text of every
message, stay inputs a run accepts whole (tool-call arguments stay valid JSON), and the rule is the
one both benchmark scripts use."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_copies  # noqa: E402
import bench_prepare  # noqa: E402
import bench_scale  # noqa: E402

RECORDS = [
    {"id": "a", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello"}]},
    {"id": "t", "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
     "messages": [{"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": None,
                   "tool_calls": [{"type": "function", "function": {"name": "f",
                                                                    "arguments": '{"city": "Oslo", "days": 2}'}}]},
                  {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}]},
]


def _read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_every_copy_changes_every_message_text(tmp_path: Path) -> None:
    n = bench_copies.write_copies(RECORDS, 3, tmp_path / "x.jsonl")
    rows = _read(tmp_path / "x.jsonl")
    assert n == len(rows) == 6
    assert len({r["id"] for r in rows}) == 6
    for i, rec in enumerate(RECORDS):
        copies = [rows[k * len(RECORDS) + i] for k in range(3)]
        for j in range(len(rec["messages"])):
            texts = [json.dumps(c["messages"][j], sort_keys=True) for c in copies]
            assert len(set(texts)) == 3, f"message {j} of {rec['id']} repeats across copies: {texts}"
    assert rows[2]["messages"][1]["content"] == "Hi [1]"


def test_tagged_arguments_stay_json_objects(tmp_path: Path) -> None:
    bench_copies.write_copies(RECORDS, 2, tmp_path / "x.jsonl")
    for row in _read(tmp_path / "x.jsonl"):
        for msg in row["messages"]:
            for call in msg.get("tool_calls") or []:
                args = json.loads(call["function"]["arguments"])  # a run rejects arguments that are not JSON
                assert isinstance(args, dict) and args["days"] == 2
                assert args["city"].startswith("Oslo [")


def test_identical_copies_and_half_duplicates(tmp_path: Path) -> None:
    bench_copies.write_copies(RECORDS, 2, tmp_path / "same.jsonl", change=False)
    same = _read(tmp_path / "same.jsonl")
    assert [r["messages"] for r in same[:2]] == [r["messages"] for r in same[2:]] == [r["messages"] for r in RECORDS]
    bench_copies.write_copies(RECORDS, 4, tmp_path / "half.jsonl", half_duplicates=True)
    half = _read(tmp_path / "half.jsonl")
    msgs = [json.dumps(r["messages"]) for r in half]
    assert msgs[0:2] == msgs[2:4] and msgs[4:6] == msgs[6:8] and msgs[0:2] != msgs[4:6]
    assert len({r["id"] for r in half}) == 8


def test_both_benchmarks_use_the_one_rule() -> None:
    assert bench_prepare.write_copies is bench_copies.write_copies
    assert bench_scale.build_input is bench_copies.build_input
