"""Tests for the synthetic record generator.

The checker below is deliberately local and small: it restates the input rules independently of
the package's validator, so a generator bug cannot hide behind a validator bug (or vice versa).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.synth import BROKEN_REASONS, generate_broken_lines, generate_records, main, write_jsonl

ROLES = {"system", "user", "assistant", "tool", "ipython"}
CONTROL_LOOKALIKES = ("<|eot_id|>", "<|begin_of_text|>", "<|start_header_id|>")


def _schema_ok(rec: dict[str, Any]) -> bool:
    msgs = rec.get("messages")
    if not isinstance(msgs, list):
        return False
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return False
        calls = m.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list) or not calls:
                return False
            for c in calls:
                fn = c.get("function") if isinstance(c, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    return False
                if not isinstance(fn.get("arguments"), dict | str):
                    return False
        content = m.get("content")
        if not (isinstance(content, str) or (content is None and m["role"] == "assistant" and calls)):
            return False
        if m.get("weight", 1) not in (0, 1) or isinstance(m.get("weight"), bool):
            return False
    return True


def diagnose(line: str) -> str | None:
    """The reason code a raw JSONL line deserves, or None if it is a valid record."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return "invalid_json"
    if not isinstance(rec, dict):
        return "not_an_object"
    if not _schema_ok(rec):
        return "schema"
    msgs = rec["messages"]
    if any(m["role"] not in ROLES for m in msgs):
        return "unknown_role"
    for m in msgs:
        try:
            (m["content"] or "").encode("utf-8")
        except UnicodeEncodeError:
            return "lone_surrogate"
    assistants = [m for m in msgs if m["role"] == "assistant"]
    if not assistants:
        return "no_assistant"
    if all(m.get("weight", 1) == 0 for m in assistants):
        return "no_trainable_turn"
    if any(m["content"] is not None and not m["content"].strip() for m in assistants):
        return "empty_assistant"
    return None


def check_valid(rec: dict[str, Any]) -> None:
    """Stricter rules every generated record must also meet (beyond ``diagnose`` returning None)."""
    line = json.dumps(rec, ensure_ascii=False)
    assert diagnose(line) is None, (diagnose(line), rec)
    msgs = rec["messages"]
    assert any(
        m["role"] == "assistant" and m.get("weight", 1) != 0 and (m["content"] or "").strip() for m in msgs
    )
    tool_names = {t["function"]["name"] for t in rec.get("tools", [])}
    if rec.get("tools"):
        assert [m for m in msgs if m["role"] != "system"][0]["role"] == "user"
    for i, m in enumerate(msgs):
        if m["role"] in ("user", "assistant") and m["content"] is not None:
            assert m["content"].strip()
        if "tool_calls" in m:
            assert len(m["tool_calls"]) == 1
            fn = m["tool_calls"][0]["function"]
            assert fn["name"] in tool_names
            args = fn["arguments"]
            assert isinstance(args if isinstance(args, dict) else json.loads(args), dict)
            assert msgs[i + 1]["role"] in ("tool", "ipython")
        if m["role"] in ("tool", "ipython"):
            assert msgs[i - 1].get("tool_calls")


@pytest.mark.parametrize("hostile", [False, True])
def test_records_are_valid_and_ids_unique(hostile: bool) -> None:
    recs = generate_records(3000, seed=7, hostile=hostile)
    for rec in recs:
        check_valid(rec)
    ids = [r["id"] for r in recs]
    assert len(set(ids)) == len(ids) == 3000
    assert ids[0] == "gen-000000" and ids[123] == "gen-000123"


def test_deterministic_per_seed() -> None:
    assert generate_records(300, seed=3) == generate_records(300, seed=3)
    assert generate_records(300, seed=3) != generate_records(300, seed=4)
    assert generate_broken_lines(40, seed=3) == generate_broken_lines(40, seed=3)
    assert generate_broken_lines(40, seed=3) != generate_broken_lines(40, seed=4)


def test_variety() -> None:
    recs = generate_records(2000, seed=1)
    msgs = [m for r in recs for m in r["messages"]]
    text = "\n".join(m["content"] for m in msgs if isinstance(m.get("content"), str))
    assert any("tools" in r for r in recs) and any("tools" not in r for r in recs)
    assert {len([m for m in r["messages"] if m["role"] == "user"]) for r in recs} == set(range(1, 7))
    assert any(m["role"] == "system" and m["content"] == "" for m in msgs)
    assert any(m["role"] == "system" and m["content"] != m["content"].strip() for m in msgs)
    assert any(m["role"] in ("user", "assistant") and m["content"] != m["content"].strip() for m in msgs)
    assert any(m.get("weight") == 0 for m in msgs)
    calls = [m["tool_calls"][0]["function"]["arguments"] for m in msgs if "tool_calls" in m]
    assert any(isinstance(a, dict) for a in calls) and any(isinstance(a, str) for a in calls)
    tool_contents = [m["content"] for m in msgs if m["role"] in ("tool", "ipython")]
    assert any(c.startswith("{") for c in tool_contents) and any(not c.startswith("{") for c in tool_contents)
    for needle in ("```python", "```sql", "北京", "ありがとう", "مرحبا", "שלום", "👩‍💻", "\u0301", "\t\t", "\n\n\n"):
        assert needle in text, needle
    assert any(len(tok) >= 100 and tok.isdigit() for tok in text.split())
    # Control-token look-alikes appear only on request.
    assert not any(t in text for t in CONTROL_LOOKALIKES)


def test_hostile_puts_control_lookalikes_in_user_and_assistant() -> None:
    msgs = [m for r in generate_records(500, seed=2, hostile=True) for m in r["messages"]]
    for role in ("user", "assistant"):
        assert any(isinstance(m["content"], str) and "<|eot_id|>" in m["content"] for m in msgs if m["role"] == role)


def test_no_tools_flag() -> None:
    recs = generate_records(500, seed=5, tools=False)
    assert not any("tools" in r or any("tool_calls" in m for m in r["messages"]) for r in recs)


def test_broken_lines_match_their_reason() -> None:
    lines = generate_broken_lines(400, seed=11)
    assert {reason for _, reason in lines} == set(BROKEN_REASONS)
    for line, reason in lines:
        assert "\n" not in line
        assert diagnose(line) == reason, (reason, line)


def test_write_jsonl_and_cli_roundtrip(tmp_path) -> None:
    recs = generate_records(50, seed=9)
    path = tmp_path / "a.jsonl"
    write_jsonl(path, recs)
    assert [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] == recs

    out = tmp_path / "b.jsonl"
    main(["20", str(out), "--seed", "9", "--hostile", "--broken", "8"])
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 28
    assert [diagnose(x) for x in lines[:20]] == [None] * 20
    assert [diagnose(x) for x in lines[20:]] == list(BROKEN_REASONS)
