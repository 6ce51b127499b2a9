"""Read a file that holds one JSON value (``.json``, ``.json.gz``, ``.json.zst``) as records.

A JSON array gives its elements, one object is one record. The whole value is read (under a cap
of ``json_value_cap`` bytes, decompressed), because JSON has no record boundaries to cut at; JSON
Lines is the format for large inputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import orjson

from sftdata.constants import DEFAULT_MAX_DECOMPRESSED
from sftdata.stages.parse import duplicate_keys_by_element
from sftdata.stages.read.compressed import open_decompressed
from sftdata.stages.read.jsonl import BOM, Chunk, JsonTooLarge, json_value_cap, too_large_json
from sftdata.stages.read.remote import input_size, open_input


def read_json_array(chunk: Chunk, max_record_bytes: int,
                    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED) -> Iterator[tuple[int, object | None, bytes]]:
    """Records of a file holding one JSON value: (1-based element index, value or None, raw).
    An element with a key twice comes back as its ``Reject`` (``duplicate_key``) instead of a value.

    An array gives its elements; one object is one record (index 1). Anything else, or JSON that
    does not parse, comes back once with value None. Compressed files (``json_gz``/``json_zst``)
    are decompressed under the usual limit first.
    """
    cap = json_value_cap(max_record_bytes)
    if chunk.kind == "json_array":
        size = input_size(chunk.path)
        if size > cap:
            raise JsonTooLarge(too_large_json(chunk.name, size, max_record_bytes))
        with open_input(chunk.path) as f:
            raw = f.read()
    else:
        with open_decompressed(chunk.path, chunk.kind, max_decompressed_bytes) as f:
            raw = f.read(cap + 1)
        if len(raw) > cap:
            raise JsonTooLarge(too_large_json(chunk.name, None, max_record_bytes) + "; it was not read")
    raw = raw.lstrip(BOM)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # the stdlib accepts what orjson refuses (lone surrogates, huge integers): judge per element
            doc = json.loads(raw.decode("utf-8", errors="strict"))
        except (ValueError, RecursionError):
            yield 1, None, raw
            return
    if isinstance(doc, dict):
        yield 1, doc, raw  # one record; the caller parses ``raw`` with the line rules
        return
    if not isinstance(doc, list):
        yield 1, None, raw
        return
    dups = duplicate_keys_by_element(doc, raw)
    for i, item in enumerate(doc, start=1):
        # ASCII escapes survive lone surrogates; the element is then parsed like a line
        yield i, dups.get(i, item), json.dumps(item, ensure_ascii=True).encode()
