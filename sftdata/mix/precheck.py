"""Budgets refused before the first pass, where the input alone shows they cannot be met.

The first pass (parse, validate, render, encode) is what tells a source's valid records and their
tokens; a take or an eval size that needs more records than a source's input *holds at all*
cannot be met whatever that pass finds, so it is refused before any record is tokenized. The
bound counts lines (JSON Lines), rows (Parquet, a saved ``datasets`` folder): every record is one
of them, so a valid record count never exceeds it. Sources in other layouts (a JSON array,
compressed files) have no cheap bound: their budgets are checked after the first pass, as every
budget is (``select.py``), before any row is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from sftdata.mix.recipe import Recipe, Take
from sftdata.mix.select import MixBudgetError, half_up
from sftdata.stages.read.jsonl import Chunk

_BLOCK = 1 << 22


def _jsonl_lines(chunk: Chunk) -> int:
    """Lines in the chunk's byte range, a last line without its line end included."""
    lines, last = 0, b"\n"
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        left = chunk.end - chunk.start
        while left > 0:
            block = f.read(min(_BLOCK, left))
            if not block:
                break
            lines += block.count(b"\n")
            last, left = block[-1:], left - len(block)
    return lines + (last != b"\n")


def _parquet_rows(chunk: Chunk) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(chunk.path).metadata.row_group(rg).num_rows for rg in range(chunk.start, chunk.end))


def records_bound(chunks: Iterable[Chunk]) -> int | None:
    """At most how many records ``chunks`` hold; None when one of them has no cheap bound."""
    total = 0
    for c in chunks:
        if c.kind == "jsonl":
            total += _jsonl_lines(c)
        elif c.kind == "parquet":
            try:
                total += _parquet_rows(c)
            except Exception:  # noqa: BLE001 - an unreadable file is reported when its chunk is read
                return None
        elif c.kind == "hf_dataset":
            total += c.end - c.start
        else:
            return None
    return total


def rows_bound(take: Take, records: int | None) -> int | None:
    """At most how many rows a source gives with ``take`` when it holds at most ``records`` records."""
    if take.kind == "records":
        return int(take.value)
    if records is None or take.kind == "tokens":
        return None
    if take.kind == "fraction":
        return half_up(take.value * records)
    if take.kind == "repeat":
        whole = math.floor(take.value)
        return whole * records + half_up((take.value - whole) * records)
    return records


def precheck(recipe: Recipe, chunks: list[Chunk]) -> None:
    """Refuse (exit 2) a ``records`` take or ``records`` eval size larger than the input can give."""
    needs_eval = recipe.split.enabled and recipe.split.eval_kind == "records"
    if not needs_eval and not any(s.take.kind == "records" for s in recipe.sources):
        return
    rows: dict[str, int | None] = {}
    for s in recipe.sources:
        held = records_bound(c for c in chunks if c.source == s.name)
        if s.take.kind == "records" and held is not None and s.take.value > held:
            raise MixBudgetError(f"source {s.name}: take records {int(s.take.value)}, but its input holds at most "
                                 f"{held:,} record(s) (lines or rows); refused before tokenizing")
        rows[s.name] = rows_bound(s.take, held)
    if not needs_eval:
        return
    want = int(recipe.split.eval_value)
    scopes = list(rows.items()) if recipe.split.per_source else [
        ("the mix", None if None in rows.values() else sum(rows.values()))]
    for name, bound in scopes:
        if bound is not None and want > bound:
            raise MixBudgetError(f"split eval records {want}: {name} can give at most {bound:,} row(s); refused "
                                 "before tokenizing")
