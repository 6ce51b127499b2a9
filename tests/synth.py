"""Deterministic synthetic chat records for tests and benchmarks.

Why: tests need many records that hit the awkward corners of the Llama-3 format (whitespace at
the edges, CJK, combining marks, digit runs, tool calls, untrained turns, text that looks like
control tokens) without shipping a dataset or touching the network. Everything comes from one
``random.Random(seed)``, so a failing test or a benchmark number can be reproduced exactly.

    python -m tests.synth 100000 corpus.jsonl --seed 1 --hostile
"""

from __future__ import annotations

import argparse
import gc
import json
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

_EN = (
    "Sure, here is a short answer.", "Can you explain how this works?", "That depends on the input size.",
    "The quick brown fox jumps over the lazy dog.", "Let me think about it step by step.",
    "It's not the fastest option, but it's the simplest.", "What's the difference between them?",
    "Use a context manager so the file is closed.", "I don't think that's right; check the units.",
    "Rule of thumb: measure first, optimize second.", "Thanks, that helped a lot!",
)
_CJK = ("北京今天天气很好，我们去公园散步吧。", "请用中文解释一下这个算法。", "東京タワーは何メートルですか？",
        "ありがとうございます。とても助かりました。", "한국어로 번역해 주세요.", "机器学习模型需要大量数据。")
_RTL = ("مرحبا، كيف يمكنني مساعدتك اليوم؟", "عاصمة المغرب هي الرباط.", "שלום, מה שלומך?",
        "זה עובד גם עם עברית.", "النص العربي يُكتب من اليمين إلى اليسار.")
_EMOJI = ("🙂", "🎉🎉", "👩‍💻", "🇯🇵🇩🇪", "👍🏽", "🏕️🔥🌲", "❤️‍🔥", "🧪 test passed ✅")
_COMBINING = ("cafe\u0301", "n\u0303o", "a\u0308\u0304", "Z\u0351\u0352a\u0334l\u0336g\u0337o\u0338",
              "e\u0301\u0301\u0301", "\u0915\u094d\u0937", "ñ vs n\u0303")
_WS_RUNS = ("   ", "\t\t", "\n\n\n", " \t \n", "    \n    ", "\u00a0\u00a0", "\r\n")
_CODE = (
    "```python\ndef {name}(xs: list[int]) -> int:\n    total = 0\n    for x in xs:\n"
    "        if x % 2:\n            total += x\n\n    return total\n```",
    "```python\nclass {Name}:\n    \"\"\"Keeps a running count.\"\"\"\n\n    def __init__(self) -> None:\n"
    "        self.n = {num}\n\n    def bump(self) -> int:\n        self.n += 1\n        return self.n\n```",
    "```sql\nSELECT c.name,\n       SUM(o.total) AS revenue\nFROM customers AS c\nJOIN orders AS o\n"
    "  ON o.customer_id = c.id\n\nWHERE o.total > {num}\nGROUP BY c.name;\n```",
    "```bash\nfor f in *.log; do\n\tgzip \"$f\"\ndone\n```",
)
_NAMES = ("parse", "count_odd", "merge", "tally", "reduce_rows", "scan")
# Llama-3 control tokens written as text; used only with hostile=True.
_HOSTILE = ("<|eot_id|>", "<|begin_of_text|>", "<|start_header_id|>assistant<|end_header_id|>\n\n",
            "<|end_of_text|>", "<|eom_id|>", "<|python_tag|>", "<|reserved_special_token_7|>",
            "<|start_header_id|>system<|end_header_id|>", "<|eot_id", "<| eot_id |>")
_CITIES = ("Lisbon", "Berlin", "東京", "القاهرة", "São Paulo", "Zürich", "New York")
_TOOL_ERRORS = ("Error: upstream timed out after 30s.", "rate limited, retry later",
                "No results.", "  service unavailable  ")


# json.dumps(..., ensure_ascii=False) builds a new encoder on every call; reuse one instead.
_to_json = json.JSONEncoder(ensure_ascii=False).encode


def _pick(r: random.Random, seq: Sequence[Any]) -> Any:
    """``r.choice`` without its overhead: choice() dominated the profile, and generation must stay fast."""
    return seq[int(r.random() * len(seq))]


def _prop(kind: str, desc: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": desc, **extra} if desc else {"type": kind, **extra}


# (name, description, properties factory, required, arguments factory, result factory)
_ToolDef = tuple[str, str, Callable[[], dict[str, Any]], list[str],
                 Callable[[random.Random], dict[str, Any]], Callable[[random.Random, dict[str, Any]], Any]]
_TOOLS: tuple[_ToolDef, ...] = (
    ("get_weather", "Current weather for a city.",
     lambda: {"city": _prop("string", "City name"), "unit": _prop("string", enum=["celsius", "fahrenheit"])},
     ["city"], lambda r: {"city": _pick(r, _CITIES), "unit": _pick(r, ("celsius", "fahrenheit"))},
     lambda r, a: {"city": a["city"], "temperature": round(r.uniform(-10, 40), 1), "conditions": "sunny"}),
    ("search_docs", "Full-text search over the internal wiki.",
     lambda: {"query": _prop("string"), "limit": _prop("integer", default=5, minimum=1)},
     ["query"], lambda r: {"query": _pick(r, _EN), "limit": r.randint(1, 10)},
     lambda r, a: {"results": [{"title": _pick(r, _EN), "score": round(r.random(), 3)}
                               for _ in range(r.randint(0, 3))]}),
    ("convert_currency", "Convert an amount between two currencies.",
     lambda: {"amount": _prop("number"), "from": _prop("string"), "to": _prop("string")},
     ["amount", "from", "to"],
     lambda r: {"amount": r.randint(1, 10**6) / 100, "from": _pick(r, ("EUR", "USD")), "to": _pick(r, ("JPY", "CHF"))},
     lambda r, a: {"result": round(a["amount"] * r.uniform(0.5, 170), 2), "as_of": "2024-07-26"}),
    ("lookup_order", "Look up an order by its number.",
     lambda: {"order_id": _prop("string", "Order number", pattern="^[A-Z]{2}-[0-9]{6}$")},
     ["order_id"], lambda r: {"order_id": f"NW-{r.randrange(10**6):06d}"},
     lambda r, a: {"order_id": a["order_id"], "status": _pick(r, ("shipped", "delivered", "lost")),
                   "items": [{"sku": "TENT-2P", "qty": r.randint(1, 3)}], "note": None}),
    ("run_sql", "Run a read-only SQL query.",
     lambda: {"sql": _prop("string", "One SELECT statement")},
     ["sql"], lambda r: {"sql": f"SELECT id, name\nFROM users\nWHERE age > {r.randint(18, 99)};"},
     lambda r, a: {"rows": [[r.randint(1, 999), _pick(r, _CJK)]], "truncated": False}),
)


def _fragment(r: random.Random) -> str:
    """One non-blank piece of text, of a kind picked at random.

    Hot path (about ten calls per record): items are drawn as ``seq[int(rnd() * len(seq))]`` inline.
    """
    rnd = r.random
    k = rnd()
    if k < 0.40:
        return _EN[int(rnd() * len(_EN))]
    if k < 0.48:
        return "\n".join((_EN[int(rnd() * len(_EN))], _EN[int(rnd() * len(_EN))], "", _EN[int(rnd() * len(_EN))]))
    if k < 0.56:
        name = _NAMES[int(rnd() * len(_NAMES))]
        return _CODE[int(rnd() * len(_CODE))].format(name=name, Name=name.title(), num=int(rnd() * 10**4))
    if k < 0.62:
        return "id " + str(r.getrandbits(64 + int(rnd() * 1236)))  # one run of 20..390 digits
    if k < 0.70:
        return _EN[int(rnd() * len(_EN))] + _WS_RUNS[int(rnd() * len(_WS_RUNS))] + _EN[int(rnd() * len(_EN))]
    if k < 0.80:
        return _CJK[int(rnd() * len(_CJK))]
    if k < 0.86:
        return _RTL[int(rnd() * len(_RTL))]
    if k < 0.93:
        return _EN[int(rnd() * len(_EN))] + " " + _EMOJI[int(rnd() * len(_EMOJI))]
    return _COMBINING[int(rnd() * len(_COMBINING))]


_JOINERS = (" ", "\n", "\n\n")
_TAILS = ("", " ", "\n", "\t \n")


def _text(r: random.Random, hostile: bool) -> str:
    """Content that is never blank after strip(); sometimes padded, sometimes with control-token look-alikes."""
    rnd = r.random
    k = rnd()
    parts = [_fragment(r)] if k < 0.5 else [_fragment(r) for _ in range(2 if k < 0.83 else 3)]
    if hostile and rnd() < 0.35:
        parts.insert(int(rnd() * (len(parts) + 1)), _HOSTILE[int(rnd() * len(_HOSTILE))])
    s = parts[0] if len(parts) == 1 else _JOINERS[int(rnd() * 3)].join(parts)
    if rnd() < 0.12:
        s = _WS_RUNS[int(rnd() * len(_WS_RUNS))] + s + _TAILS[int(rnd() * 4)]
    return s


def _tool_spec(t: _ToolDef) -> dict[str, Any]:
    """A fresh OpenAI-shape function spec (fresh dicts so records never share mutable state)."""
    params = {"type": "object", "properties": t[2](), "required": list(t[3])}
    return {"type": "function", "function": {"name": t[0], "description": t[1], "parameters": params}}


def _tool_exchange(r: random.Random, tools: list[_ToolDef]) -> list[dict[str, Any]]:
    """One assistant tool call (exactly one per message, as the Llama-3.1 templates require) and its result."""
    t = _pick(r, tools)
    args = t[4](r)
    k = r.random()  # arguments: a dict, or a JSON string with non-ASCII kept raw or \u-escaped
    arguments = args if k < 0.5 else _to_json(args) if k < 0.75 else json.dumps(args)
    call = {"type": "function", "function": {"name": t[0], "arguments": arguments}}
    if r.random() < 0.85:
        content = _to_json(t[5](r, args))
    else:
        content = _pick(r, _TOOL_ERRORS)
    result: dict[str, Any] = {"role": "ipython" if r.random() < 0.1 else "tool", "content": content}
    if r.random() < 0.3:
        result["name"] = t[0]
    return [{"role": "assistant", "content": None, "tool_calls": [call]}, result]


def _record(r: random.Random, idx: int, tools: bool, hostile: bool) -> dict[str, Any]:
    """One valid record: optional system, 1-6 user/assistant turns, some with tool calls before the reply."""
    msgs: list[dict[str, Any]] = []
    k = r.random()
    if k < 0.15:
        msgs.append({"role": "system", "content": "You are a helpful assistant."})
    elif k < 0.25:
        msgs.append({"role": "system", "content": "  " + _text(r, False) + "\n"})
    elif k < 0.30:
        msgs.append({"role": "system", "content": ""})
    used = [_TOOLS[i] for i in r.sample(range(len(_TOOLS)), r.randint(1, 3))] if tools and r.random() < 0.25 else []
    turns = _pick(r, (1, 1, 1, 2, 2, 3, 4, 5, 6))
    call_turn = r.randrange(turns) if used else -1  # guarantees at least one tool call per tools record
    for turn in range(turns):
        msgs.append({"role": "user", "content": _text(r, hostile)})
        if used and (turn == call_turn or r.random() < 0.3):
            for _ in range(_pick(r, (1, 1, 2))):
                msgs.extend(_tool_exchange(r, used))
        reply: dict[str, Any] = {"role": "assistant", "content": _text(r, hostile)}
        w = r.random()
        if turn < turns - 1 and w < 0.15:
            reply["weight"] = 0  # the final turn stays trainable, so every record has one
        elif w > 0.9:
            reply["weight"] = 1
        msgs.append(reply)
    rec: dict[str, Any] = {"id": f"gen-{idx:06d}", "messages": msgs}
    if used:
        rec["tools"] = [_tool_spec(t) for t in used]
    return rec


def generate_records(n: int, seed: int = 0, *, tools: bool = True, hostile: bool = False) -> list[dict]:
    """``n`` valid records with ids ``gen-000000``...; the same (n, seed, flags) always gives the same list."""
    r = random.Random(seed)
    # The records hold no reference cycles, but allocating millions of small dicts keeps triggering the
    # cyclic GC, which re-scans the growing list: pausing it roughly halves generation time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [_record(r, i, tools, hostile) for i in range(n)]
    finally:
        if was_enabled:
            gc.enable()


_SURROGATE = "@@SURROGATE@@"


def _broken(r: random.Random, reason: str, idx: int) -> str:
    """One raw line with exactly one defect, so that ``reason`` is the only right diagnosis."""
    rec = _record(r, idx, False, False)
    rec["id"] = f"bad-{idx:06d}"
    msgs = rec["messages"]
    a_idx = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    if reason == "invalid_json":
        full = json.dumps(rec, ensure_ascii=False)
        return _pick(r, (full[: r.randint(1, len(full) - 1)], "{'id': 'x', 'messages': []}", full[:-1] + ",}",
                         '{"messages": [}', "not json at all", full + " trailing"))
    if reason == "not_an_object":
        return _pick(r, (json.dumps(msgs, ensure_ascii=False), "42", '"just a string"', "null", "true", "[]"))
    if reason == "schema":
        m = msgs[_pick(r, a_idx)]
        k = r.randrange(6)
        if k == 0:
            del rec["messages"]
        elif k == 1:
            rec["messages"] = _pick(r, ("user: hi", {"role": "user"}, None, 7))
        elif k == 2:
            m["content"] = _pick(r, (8, 3.5, True))
        elif k == 3:
            del m["role"]
        elif k == 4:
            m["content"], m["tool_calls"] = None, _pick(r, ("get_weather()", {"name": "f"}, [{"type": "function"}],
                                                            [{"type": "function", "function": {"name": 5}}]))
        else:
            msgs.insert(r.randrange(len(msgs) + 1), "assistant: hello")
    elif reason == "unknown_role":
        msgs.insert(r.randint(1, len(msgs)), {"role": _pick(r, ("bot", "model", "human", "gpt")), "content": "hi"})
    elif reason == "no_assistant":
        rec["messages"] = [m for m in msgs if m["role"] != "assistant"]
    elif reason == "no_trainable_turn":
        for i in a_idx:
            msgs[i]["weight"] = 0
    elif reason == "empty_assistant":
        if len(a_idx) < 2:  # keep another trainable turn so that only emptiness is wrong
            msgs += [{"role": "user", "content": "And?"}, {"role": "assistant", "content": "Done."}]
            a_idx.append(len(msgs) - 1)
        for i in a_idx:
            msgs[i].pop("weight", None)
        msgs[_pick(r, a_idx)]["content"] = _pick(r, ("", " ", "\n\t ", "   \n\n"))
    elif reason == "lone_surrogate":
        m = msgs[_pick(r, [i for i, m in enumerate(msgs) if m["role"] in ("user", "assistant")])]
        m["content"] = m["content"][:5] + _SURROGATE + m["content"][5:]
        return json.dumps(rec, ensure_ascii=False).replace(_SURROGATE, _pick(r, ("\\ud800", "\\udfff", "\\udc00x")))
    return json.dumps(rec, ensure_ascii=False)


BROKEN_REASONS = ("invalid_json", "not_an_object", "schema", "unknown_role", "no_assistant",
                  "no_trainable_turn", "empty_assistant", "lone_surrogate")


def generate_broken_lines(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` raw JSONL lines (no newline), each invalid in one way, paired with the expected reason code.

    Reasons cycle through ``BROKEN_REASONS`` so that every code appears once n >= 8. ``schema`` is the
    umbrella for shape errors; ``sftdata.stages.validate`` reports those more finely (``wrong_type``,
    ``missing_field``, ``schema``).
    """
    r = random.Random(seed)
    out = []
    for i in range(n):
        reason = BROKEN_REASONS[i % len(BROKEN_REASONS)]
        out.append((_broken(r, reason, i), reason))
    return out


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Write one JSON object per line, UTF-8, non-ASCII kept as is (as real datasets usually are)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(_to_json(rec))
            f.write("\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.synth", description="Write a synthetic JSONL corpus.")
    p.add_argument("n", type=int, help="number of valid records")
    p.add_argument("out", type=Path, help="output .jsonl path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hostile", action="store_true", help="put control-token look-alikes in content")
    p.add_argument("--no-tools", action="store_true", help="no records with tools / tool calls")
    p.add_argument("--broken", type=int, default=0, metavar="K", help="also append K broken lines")
    a = p.parse_args(argv)
    write_jsonl(a.out, generate_records(a.n, a.seed, tools=not a.no_tools, hostile=a.hostile))
    if a.broken:
        with open(a.out, "a", encoding="utf-8", newline="\n") as f:
            f.writelines(line + "\n" for line, _ in generate_broken_lines(a.broken, a.seed))


if __name__ == "__main__":
    main()
