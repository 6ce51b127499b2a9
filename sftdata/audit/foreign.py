"""The audit of token data without a manifest: what TRL, Axolotl, a script or ``sftdata export`` wrote.

Why the same rules and not a lighter check: the failure modes are the same (and more frequent
outside sftdata), and the rules already work from the tokens alone. What changes is what can be
known: there is no manifest to recount, no recorded tokenizer fingerprint and no list of rows that
were truncated on purpose, so those rules say ``skip (no manifest)`` rather than pass, and a row
cut inside its last answer is a violation (``turn_cut_off``) rather than an allowance.

A tokenizer that does not fit the ids at all is an error (exit 2), not a wall of violations.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sftdata.audit import (
    THRESHOLDS,
    _check_records,
    _number,
    _stats,
    _tokenizer,
    check_table,
    finish_report,
    rule_context,
)
from sftdata.audit.columns import Layout, column_parts, layout, looks_shifted, normalise
from sftdata.audit.integrity import AuditError, list_parts
from sftdata.audit.reader import Part, discover, read_part
from sftdata.audit.report import MANIFEST_RULES, AuditReport, RowStats, Violations

DEFAULT_TOKENIZER = "builtin:llama3"
MAX_OUT_OF_VOCAB = 0.01  # more ids outside the vocabulary than this share: the wrong tokenizer


def resolve_layout(table: pa.Table, lay: Layout, tok: Any, shifted: bool | None) -> Layout:
    """Decide whether the labels (or mask) are shifted by one: as told, or detected."""
    if shifted is not None:
        return dataclasses.replace(lay, shifted=bool(shifted))
    ids, lens = column_parts(table.column(lay.ids))
    values, vlens = column_parts(table.column(lay.labels or lay.mask))
    newline = tok.header_newline_ids
    found = looks_shifted(ids, lens, values, vlens, lay.mask is not None,
                          tuple(i for i in (tok.eot_id, tok.eom_id) if i is not None), tok.end_header_id,
                          newline[-1] if newline else None)
    return dataclasses.replace(lay, shifted=bool(found), shift_detected=bool(found))


def check_vocabulary(table: pa.Table, tok: Any, where: str) -> None:
    """Ids that this tokenizer cannot have made: one clear error instead of a violation per row."""
    ids, _ = list_parts(table.column("input_ids"))
    if not ids.size:
        return
    bad = int(np.count_nonzero((ids < 0) | (ids >= tok.vocab_size)))
    if bad > MAX_OUT_OF_VOCAB * ids.size:
        raise AuditError(f"{where}: {bad:,} of {ids.size:,} ids lie outside the vocabulary of {tok.spec!r} "
                         f"({tok.vocab_size:,} ids; largest id {int(ids.max()):,}): the data was tokenized with "
                         "another tokenizer (name it with --tokenizer)")
    if not np.any(ids == tok.start_header_id):
        raise AuditError(f"{where}: no Llama-3 header token (<|start_header_id|>, id {tok.start_header_id}) in "
                         f"any of its {table.num_rows:,} rows: not Llama-3 chat data for {tok.spec!r} (another "
                         "tokenizer's ids, or a template without Llama-3 headers)")


def _parts_and_tables(parts: list[Part], labels_column: str | None, mask_column: str | None,
                      shifted: bool | None, tok: Any, location: str, pad_ids: frozenset[int]):
    for part in parts:
        table = read_part(part, tok.bos_id)
        where = f"{location}: {part.name}" if part.name != location else location
        lay = resolve_layout(table, layout(table.schema, labels_column, mask_column, where), tok, shifted)
        norm = normalise(table, lay, 0, pad_ids)
        check_vocabulary(norm.table, tok, where)
        yield part, lay, norm


def audit_foreign(location: str, *, min_trained_fraction: float | None = None,
                  sources: Sequence[str | Path] | None = None, max_per_rule: int = 1000,
                  labels_column: str | None = None, mask_column: str | None = None, shifted: bool | None = None,
                  tokenizer: str | None = None, template: str | None = None) -> AuditReport:
    """Audit every part of ``location`` (see `sftdata.audit.reader.discover`) with every row rule."""
    started = time.perf_counter()
    if sources and not template:
        raise AuditError("--source on data without a manifest needs --template (llama3, llama3.1 or llama3.2): "
                         "the template to render the source records with")
    kind, parts = discover(location)
    spec = tokenizer or DEFAULT_TOKENIZER
    tok = _tokenizer(spec)
    ctx = rule_context(tok)
    sink = Violations(max_per_rule)
    total, packed_any, samples, described = RowStats(), False, [], []
    layouts: dict[str, Layout] = {}
    kept: list[tuple[str, Layout, pa.Table]] = []  # for --source
    rows_started = time.perf_counter()
    for part, lay, norm in _parts_and_tables(parts, labels_column, mask_column, shifted, tok, location, ctx.pad_ids):
        table = norm.table
        ids = table.column("id")
        for row, pos, count, first in norm.trained_padding:
            sink.add("pad_trained", f"{count} trailing padding token(s) trained, first {ctx.text(first)} (labels "
                     "copied from input_ids before padding, or an end-of-text appended after the last turn?)",
                     id=ids[row].as_py(), shard=part.name, row=row, position=pos)
        checked = check_table(table, part.name, ctx, sink, prepared=False)
        if checked is None:  # cannot happen for a normalised table, but never pass what was not checked
            raise AuditError(f"{location}: {part.name}: columns cannot be checked")
        stats, packed = checked
        packed_any |= packed
        total.merge(stats)
        layouts[part.name] = lay
        described.append({"name": part.name, "format": part.kind, "rows": stats.rows, "columns": lay.describe(),
                          "labels_column": lay.labels, "mask_column": lay.mask, "shifted": lay.shifted,
                          "shift_detected": lay.shift_detected, "padding_stripped": norm.padding_stripped})
        wanted = max(0, 3 - len(samples))
        samples += [{"shard": part.name, "row": r, "why": "first rows"} for r in range(min(wanted, stats.rows))]
        if sources:
            kept.append((part.name, lay, table))
    rows_seconds = time.perf_counter() - rows_started
    if sources:
        from sftdata.audit.source_compare import compare_foreign

        compare_foreign(kept, [str(s) for s in sources], template, spec, tok, sink)
    thresholds = {k: None for k in THRESHOLDS}
    thresholds["min_trained_fraction"] = _number(min_trained_fraction)
    stats = _stats(total, {}, None, packed_any, len(parts))
    _check_records(sink, stats, {}, None, thresholds)
    skip = {r: "no manifest" for r in MANIFEST_RULES}
    if not packed_any:
        skip["packing"] = "not packed"
    if not sources:
        skip["source_match"] = "no --source"
    if thresholds["min_trained_fraction"] is None:
        skip["min_trained_fraction"] = "no threshold set"
    kinds = sorted({d["columns"] for d in described})
    info = {"kind": kind, "manifest": False, "tokenizer": spec, "parts": described,
            "description": f"{kind} without a manifest, {len(parts)} part(s): {'; '.join(kinds)}"}

    def row_reader(shard: str, row: int) -> Any:
        return read_row(parts, layouts, shard, row, ctx.pad_ids, tok.bos_id)

    return finish_report(
        path=location, location=location, sink=sink, total=total, stats=stats, skip=skip, samples=samples,
        thresholds=thresholds, ctx=ctx, started=started, rows_seconds=rows_seconds, integrity=None,
        tokenizer={"spec": spec, "fingerprint": tok.fingerprint, "manifest_fingerprint": None},
        input=info, row_reader=row_reader)


def read_row(parts: list[Part], layouts: dict[str, Layout], shard: str, row: int, pad_ids: frozenset[int],
             bos_id: int) -> Any:
    """One normalised row as an ``inspect.Row`` (for the HTML samples)."""
    from sftdata.audit.inspect import Row

    part = next(p for p in parts if p.name == shard)
    table = normalise(read_part(part, bos_id), layouts[shard], 0, pad_ids).table.slice(row, 1)
    ids, labels = list_parts(table.column("input_ids"))[0], list_parts(table.column("labels"))[0]
    seq = table.column("seq_lengths")[0].as_py() if "seq_lengths" in table.column_names else None
    return Row(id=table.column("id")[0].as_py(), shard=shard, row=row, index=row, input_ids=ids, labels=labels,
               seq_lengths=seq)
