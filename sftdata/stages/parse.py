"""Decode one JSON record: the parse rules every input kind shares (stage ``parse``).

orjson on the hot path; the stdlib only to explain a failure, for integers beyond 64 bits, and to
find duplicate keys, which orjson drops silently (the last one wins, in other readers the first).
A cheap exact test decides when that second look is needed. Failures that usually have a simple
cause (a byte-order mark inside the file, CR-only line ends) carry a hint in their message.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from sftdata.stages.records import Reject


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _find_lone_surrogate(obj: Any, pointer: str = "") -> str | None:
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return pointer or "/"
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        if isinstance(key, str) and _find_lone_surrogate(key) is not None:
            return f"{pointer}/{key}"
        found = _find_lone_surrogate(value, f"{pointer}/{key}")
        if found:
            return found
    return None


# Every ASCII digit -> "0", every other byte -> " ": a run of 19 digits (the shortest integer that
# can overflow 64 bits) is then a plain substring search, which is many times cheaper than a regex.
_DIGIT_MAP = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_DIGIT_RUN = b"0" * 19


def parse_json(raw: bytes) -> Any:
    """Decode one JSON value. orjson on the hot path; the stdlib to explain a failure, and for
    integers beyond 64 bits, which orjson would turn into floats (changing the rendered text)."""
    # only a run of 19 or more digits can be an integer beyond 64 bits
    if _DIGIT_RUN not in raw.translate(_DIGIT_MAP):
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            _check_duplicate_keys(obj, raw)
            return obj
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Reject("invalid_utf8", f"invalid UTF-8 at byte {exc.start}{_hints(raw)}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_pairs)
    except RecursionError:
        raise Reject("too_deep", "JSON nested too deeply to parse") from None
    except _DuplicateKey as exc:
        raise Reject("duplicate_key", f"key {exc.key!r} appears twice in one object; JSON readers disagree on "
                     "which value wins, so the record is refused") from None
    except ValueError as exc:
        raise Reject("invalid_json", f"invalid JSON: {exc}{_hints(raw)}") from None
    where = _find_lone_surrogate(obj)
    if where is not None:
        raise Reject("lone_surrogate", f"{where}: string holds a lone UTF-16 surrogate", where)
    return obj  # e.g. an integer beyond 64 bits, which orjson refuses but JSON allows


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key[:80]


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


# A key ends with `":` (or `"` + whitespace + `:`); so does a quote inside a string followed by a colon.
_SPACED_KEY_END = re.compile(rb'"[ \t\r\n]+:')


def _may_hold_duplicates(obj: Any, raw: bytes) -> bool:
    """False only when no key of ``raw`` can have been dropped by the parser (which keeps the last).

    Re-serialised compactly (orjson, C speed), the parsed value holds one ``":`` per key it kept
    plus one per ``"`` followed by ``:`` inside strings; the original text holds the same, plus
    one for every key that was dropped. So unless the text spells keys or quotes another way
    (whitespace before the colon, ``\\u0022``), more ``":`` in the text means a duplicate.
    """
    try:
        kept = orjson.dumps(obj).count(b'":')
    except TypeError:
        return True
    return raw.count(b'":') > kept or b"\\u0022" in raw or _SPACED_KEY_END.search(raw) is not None


def _check_duplicate_keys(obj: Any, raw: bytes) -> None:
    """Refuse an object with a key twice (orjson keeps the last silently); the exact parse runs
    only when the cheap test above cannot rule a duplicate out."""
    if not _may_hold_duplicates(obj, raw):
        return
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as exc:
        raise Reject("duplicate_key", f"key {exc.key!r} appears twice in one object; JSON readers disagree on "
                     "which value wins, so the record is refused") from None
    except (ValueError, RecursionError):
        return


class _Marked(dict):
    """A dict that had a key twice (the first duplicate in ``dup``)."""

    dup = ""


def _marking_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    marked = _Marked(out)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.dup = key[:80]
            break
        seen.add(key)
    return marked


def _first_mark(obj: Any) -> str | None:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, _Marked):
            return o.dup
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
    return None


def duplicate_keys_by_element(doc: list, raw: bytes) -> dict[int, Reject]:
    """For a JSON array already parsed (``doc``, from ``raw``): ``duplicate_key`` rejections by
    1-based element index. Cheap when there is none (see ``_check_duplicate_keys``)."""
    if not _may_hold_duplicates(doc, raw):
        return {}
    try:
        marked = json.loads(raw, object_pairs_hook=_marking_pairs)
    except (ValueError, RecursionError):
        return {}
    out = {}
    for i, item in enumerate(marked if isinstance(marked, list) else [], start=1):
        key = _first_mark(item)
        if key is not None:
            out[i] = Reject("duplicate_key", f"key {key!r} appears twice in one object; JSON readers disagree "
                            "on which value wins, so the record is refused")
    return out


def _hints(raw: bytes) -> str:
    """What usually causes a parse failure that looks like garbage."""
    bom = raw.find(b"\xef\xbb\xbf")
    if bom >= 0:
        return (f" (a byte-order mark U+FEFF at byte {bom}: files concatenated with a BOM each? Remove it, "
                "e.g. `sed -i 's/\\xEF\\xBB\\xBF//g'`)")
    if b"\r" in raw and b"\n" not in raw:
        return (" (the line holds carriage returns (\\r) but no line feed: the file has CR-only (old Mac) "
                "line ends; convert them to \\n, e.g. `tr '\\r' '\\n'`)")
    return ""


def record_id(obj: Any) -> str | None:
    """The record's own id as the rows show it: a non-empty string, or an integer (not a boolean)."""
    if not isinstance(obj, dict):
        return None
    rid = obj.get("id")
    if type(rid) is str and rid:
        return rid
    if type(rid) is int:
        return str(rid)
    return None


def check_id(obj: dict) -> None:
    """The id rule of the record schema, for formats the schema does not see (text, prompt/completion)."""
    if "id" not in obj or obj["id"] is None:
        return
    rid = obj["id"]
    if type(rid) is str and not rid:
        raise Reject("wrong_value", '/id: found "", expected a non-empty string or an integer', "/id")
    if type(rid) not in (str, int):
        found = json.dumps(rid, ensure_ascii=False, default=str)[:80]
        raise Reject("wrong_type", f"/id: found {found}, expected a string or an integer", "/id")
