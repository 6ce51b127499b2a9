"""Deterministic agentic records: built-in tools, custom tools, multi-step tool use.

Why a generator of its own: ``tests.synth`` keeps its corpus stable for the benchmarks and the
tests built on it, and its records never use built-in tools. These records reach the rest of the
Llama-3.1 format: ``builtin_tools`` per record (or left to the pipeline), calls to built-in tools
(``brave_search``, ``wolfram_alpha``, ``code_interpreter`` with multi-line code, and a non-standard
name) alone or mixed with custom calls, chains of call -> ``ipython`` result -> call -> answer,
``tools`` or its other name ``custom_tools``, untrained call turns, and with ``hostile=True``
control-token text inside code, queries and tool results. One ``random.Random(seed)`` decides all.

    python -m tests.synth_agentic 1000 agentic.jsonl --seed 1 --hostile
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

from tests.synth import _CJK, _EN, _HOSTILE, _TOOLS, _pick, _text, _tool_spec, write_jsonl

BUILTIN_POOL = ("brave_search", "wolfram_alpha", "code_interpreter", "photo_gen")
_QUERIES = ("weather in Lisbon tomorrow", "population of Zürich 2023", "integrate x^2 sin(x) dx",
            "latest release of CPython", "東京 天気", "  distance earth to mars  ", "what's 2+2?",
            "solve x^2 - 5x + 6 = 0", "Mona Lisa painter")
_CODE = (
    "import math\n\nprint(math.sqrt(2))",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint(fib(30))",
    "rows = [line.split(',') for line in open('data.csv')]\nprint(len(rows))\n",
    "import re\ntext = 'a1b22c333'\nprint(re.findall(r'\\d+', text))",
    "for i in range(3):\n\tprint(i, end=' ')\n",
    "s = \"quotes: 'single' and \\\"double\\\"\"\nprint(s)",
)
_STDOUT = ("1.4142135623730951", "832040", "[1, 22, 333]", "0 1 2 ", "Traceback (most recent call last):\n"
           "  File \"<stdin>\", line 1\nZeroDivisionError: division by zero", "")


def _hostile(r: random.Random, s: str, hostile: bool) -> str:
    """Control-token text spliced into ``s`` (it must stay text in the output)."""
    if not hostile or r.random() > 0.4:
        return s
    at = r.randint(0, len(s))
    return s[:at] + _pick(r, _HOSTILE) + s[at:]


def _builtin_call(r: random.Random, name: str, hostile: bool) -> tuple[dict[str, str], str]:
    """Arguments (strings only, as the template writes them) and a plausible result."""
    if name == "code_interpreter":
        code = _hostile(r, _pick(r, _CODE), hostile)
        return {"code": code}, _hostile(r, _pick(r, _STDOUT), hostile)
    if name == "photo_gen":
        return {"prompt": _pick(r, _EN), "size": _pick(r, ("512x512", "1024x1024"))}, "image saved to /tmp/out.png"
    query = _hostile(r, _pick(r, _QUERIES), hostile)
    if name == "wolfram_alpha":
        return {"query": query}, _hostile(r, _pick(r, ("x = 2 or x = 3", "6.5e23", "No result")), hostile)
    result = {"results": [{"title": _pick(r, _EN), "url": f"https://example.org/{r.randrange(999)}",
                           "snippet": _hostile(r, _pick(r, _CJK + _EN), hostile)} for _ in range(r.randint(0, 2))]}
    return {"query": query}, json.dumps(result, ensure_ascii=r.random() < 0.5)


def _step(r: random.Random, builtin: list[str], custom: list, hostile: bool) -> list[dict[str, Any]]:
    """One assistant tool call and its result under `ipython` (or `tool`, the other spelling)."""
    use_builtin = builtin and (not custom or r.random() < 0.6)
    if use_builtin:
        name = _pick(r, builtin)
        args, result = _builtin_call(r, name, hostile)
    else:
        t = _pick(r, custom)
        name, args = t[0], t[4](r)
        result = json.dumps(t[5](r, args), ensure_ascii=False) if r.random() < 0.8 else "rate limited, retry later"
        result = _hostile(r, result, hostile)
    arguments: Any = args if r.random() < 0.7 else json.dumps(args, ensure_ascii=r.random() < 0.5)
    call: dict[str, Any] = {"role": "assistant", "content": None if r.random() < 0.8 else "",
                            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}
    if r.random() < 0.15:
        call["weight"] = 0
    return [call, {"role": "ipython" if r.random() < 0.5 else "tool", "content": result}]


def agentic_record(r: random.Random, idx: int, hostile: bool = False) -> dict[str, Any]:
    """One valid record for the 3.1 templates; about a third name no built-in tools themselves."""
    k = r.random()
    builtin = None if k < 0.3 else [] if k < 0.35 else r.sample(BUILTIN_POOL, r.randint(1, 3))
    if builtin is not None and r.random() < 0.1:
        builtin = ["code_interpreter"]  # alone: `Tools:` with nothing listed
    custom = [_TOOLS[i] for i in r.sample(range(len(_TOOLS)), r.randint(1, 2))] if r.random() < 0.6 else []
    msgs: list[dict[str, Any]] = []
    if r.random() < 0.4:
        msgs.append({"role": "system", "content": _pick(r, ("You are a research assistant.", "  Use tools.\n", ""))})
    callable_builtin = list(builtin or [])
    for turn in range(_pick(r, (1, 1, 2, 3))):
        msgs.append({"role": "user", "content": _text(r, hostile)})
        if callable_builtin or custom:
            for _ in range(_pick(r, (0, 1, 1, 2, 3)) if turn else _pick(r, (1, 2, 3))):
                msgs.extend(_step(r, callable_builtin, custom, hostile))
        msgs.append({"role": "assistant", "content": _text(r, hostile)})
    rec: dict[str, Any] = {"id": f"agent-{idx:06d}", "messages": msgs}
    if builtin is not None:
        rec["builtin_tools"] = builtin
    if custom:
        rec["custom_tools" if r.random() < 0.3 else "tools"] = [_tool_spec(t) for t in custom]
    return rec


def generate_agentic_records(n: int, seed: int = 0, *, hostile: bool = False) -> list[dict[str, Any]]:
    """``n`` records ``agent-000000``...; the same (n, seed, hostile) always gives the same list."""
    r = random.Random(seed)
    return [agentic_record(r, i, hostile) for i in range(n)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("n", type=int)
    p.add_argument("output")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hostile", action="store_true")
    a = p.parse_args(argv)
    write_jsonl(a.output, generate_agentic_records(a.n, a.seed, hostile=a.hostile))


if __name__ == "__main__":
    main()
