"""The benchmarks' input: a corpus copied N times, each copy's text changed (issue 31).

Why one module: ``bench_prepare.py`` and ``bench_scale.py`` (and ``ray_two_node.py``) must time
the same kind of input, so the rule that makes copies differ is defined here once.

Copies must differ in their text, or a tokenizer that caches per text (and the dedupe pass) is
flattered: copy ``k`` appends `` [k]`` to every message's string content and ``-c{k}`` to every
id. A tool call's ``arguments`` given as a JSON string stays valid JSON: `` [k]`` goes at the end
of every string value of its object (arguments given as an object are left as they are, which
keeps ``bench_scale.py``'s input on the shared corpus what it was). With ``half_duplicates`` copies ``2j`` and
``2j+1`` get the same tag (their ids still differ), so half the records are exact duplicates.
``change=False`` gives the old input: identical copies, only the ids suffixed.

A caveat: splintr caches *pre-tokens* (a word, a run of spaces), not whole texts. The tag makes
every message new, but most of its pre-tokens still repeat copy 0's, so the change takes away only
part of what repeated copies give a cache (benchmarks/README.md has the figures).
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson


def _tagged_arguments(arguments: str, tag: str) -> str:
    """A tool call's ``arguments`` string, changed and still the JSON it was: every string value of
    the object it holds gets `` tag``. (Appending to the string itself would make it invalid JSON,
    which a run rejects and the reference template cannot render.) Text that is not a JSON object
    gets the tag appended, as any other text."""
    try:
        obj = json.loads(arguments)
    except ValueError:
        return f"{arguments} {tag}"
    if not isinstance(obj, dict):
        return f"{arguments} {tag}"
    return json.dumps({k: f"{v} {tag}" if isinstance(v, str) else v for k, v in obj.items()}, ensure_ascii=False)


def _tagged(message: dict, tag: str) -> dict:
    out = dict(message)
    if isinstance(out.get("content"), str):
        out["content"] = f"{out['content']} {tag}"
    if isinstance(out.get("tool_calls"), list):
        calls = []
        for call in out["tool_calls"]:
            fn = dict(call.get("function") or {})
            if isinstance(fn.get("arguments"), str):
                fn["arguments"] = _tagged_arguments(fn["arguments"], tag)
            calls.append({**call, "function": fn})
        out["tool_calls"] = calls
    return out


def changed_copy(rec: dict, k: int, tag: int | None = None, change: bool = True) -> dict:
    """Copy ``k`` of ``rec``: its messages tagged `` [tag]`` (``tag`` defaults to ``k``) and its id
    suffixed ``-c{k}``; with ``change=False`` only the id."""
    out = dict(rec)
    if change and isinstance(rec.get("messages"), list):
        label = f"[{k if tag is None else tag}]"
        out["messages"] = [_tagged(m, label) if isinstance(m, dict) else m for m in rec["messages"]]
    if "id" in rec:
        out["id"] = f"{rec['id']}-c{k}"
    return out


def write_copies(records: list[dict], copies: int, path: Path, half_duplicates: bool = False,
                 change: bool = True) -> int:
    """Write ``copies`` copies of ``records`` to ``path`` (JSON Lines); returns the record count."""
    n = 0
    with open(path, "wb") as f:
        for k in range(copies):
            tag = k // 2 if half_duplicates else k
            for rec in records:
                f.write(orjson.dumps(changed_copy(rec, k, tag, change)) + b"\n")
                n += 1
    return n


def build_input(corpus: Path, copies: int, path: Path, half_duplicates: bool = False, change: bool = True) -> int:
    """Write ``copies`` changed copies of the JSON Lines file ``corpus`` to ``path``; returns the
    record count."""
    records = [orjson.loads(line) for line in corpus.read_bytes().splitlines() if line.strip()]
    return write_copies(records, copies, path, half_duplicates, change)
