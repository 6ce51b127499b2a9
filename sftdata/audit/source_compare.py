"""``--source`` for data without a manifest: is what the trainer saw what our rendering would give?

Why by first differing token: a team auditing another tool's output wants to know *where* the two
renderings part (a date line, a trimmed space, a BOS too many, an untrained ``<|eot_id|>``), and
the first difference of a row explains the rest of it. Each mismatching row gets one violation
naming the position and both tokens, decoded.

Rows are matched to source records by id when the data has an id column whose values are the
records' ids, otherwise by order (the n-th row is the n-th record that renders).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from sftdata.audit.arrays import list_parts, offsets
from sftdata.audit.columns import Layout
from sftdata.audit.integrity import AuditError
from sftdata.audit.report import Violations
from sftdata.constants import IGNORE_INDEX


def _render(sources: list[str], template: str, spec: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    try:
        from sftdata.process.rerender import render_source_rows
    except ImportError as exc:
        raise AuditError(f"--source needs sftdata.process.rerender.render_source_rows: {exc}") from exc
    try:
        return list(render_source_rows(sources, {"pipeline": {"template": template, "tokenizer": spec,
                                                              "input_format": "auto"}}))
    except (OSError, ValueError, TypeError) as exc:
        raise AuditError(f"cannot render the source records with template {template!r}: {exc}") from exc


def _rows(parts: list[tuple[str, Layout, pa.Table]]) -> list[tuple[str, int, str | None, np.ndarray, np.ndarray]]:
    """(part, row, id or None, input_ids, labels) of every stored row, in order."""
    out = []
    for name, lay, table in parts:
        ids, lens = list_parts(table.column("input_ids"))
        labels, llens = list_parts(table.column("labels"))
        a, la = offsets(lens), offsets(llens)
        rid = table.column("id").to_pylist() if lay.row_id else [None] * table.num_rows
        out += [(name, r, rid[r], ids[a[r]:a[r + 1]], labels[la[r]:la[r + 1]]) for r in range(table.num_rows)]
    return out


def _token(tok: Any, ids: np.ndarray, p: int) -> str:
    if p >= len(ids):
        return "(end of row)"
    try:
        return f"{tok.decode([int(ids[p])])!r} (id {int(ids[p])})"
    except Exception:
        return f"id {int(ids[p])}"


def first_difference(tok: Any, got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> tuple[int, str] | None:
    """(position, message) of the first token where the stored row and our rendering differ."""
    (gi, gl), (wi, wl) = got, want
    n = min(len(gi), len(wi))
    diff = np.flatnonzero(gi[:n] != wi[:n])
    if diff.size or len(gi) != len(wi):
        p = int(diff[0]) if diff.size else n
        return p, (f"input_ids differ first at position {p}: stored {_token(tok, gi, p)}, ours {_token(tok, wi, p)} "
                   f"({len(gi)} tokens stored, {len(wi)} ours)")
    gt, wt = gl[:n] != IGNORE_INDEX, wl[:n] != IGNORE_INDEX
    diff = np.flatnonzero(gt != wt)
    if not diff.size:
        return None
    p = int(diff[0])
    state = {True: "trained", False: "masked"}
    return p, (f"labels differ first at position {p}, token {_token(tok, gi, p)}: stored {state[bool(gt[p])]}, "
               f"ours {state[bool(wt[p])]} ({int(gt.sum())} trained stored, {int(wt.sum())} ours)")


def compare_foreign(parts: list[tuple[str, Layout, pa.Table]], sources: list[str], template: str, spec: str,
                    tok: Any, sink: Violations) -> int:
    """One ``source_match`` violation per row that differs from our rendering of its record, and
    per row or record without a partner; returns how many rows were compared."""
    rendered = _render(sources, template, spec)
    stored = _rows(parts)
    by_id = {rid: k for k, (rid, _, _) in enumerate(rendered)}
    use_ids = any(row[2] is not None and row[2] in by_id for row in stored)
    matched: set[int] = set()
    compared = 0
    for k, (name, r, rid, ids, labels) in enumerate(stored):
        j = by_id.get(rid) if use_ids else (k if k < len(rendered) else None)
        if j is None or j in matched:
            sink.add("source_match", "no source record renders to this row"
                     + (f" (no record with id {rid!r})" if use_ids else " (more rows than records)"),
                     id=rid, shard=name, row=r)
            continue
        matched.add(j)
        compared += 1
        found = first_difference(tok, (ids, labels), (rendered[j][1], rendered[j][2]))
        if found is not None:
            pos, message = found
            sink.add("source_match", f"{message}; record {rendered[j][0]!r}", id=rid if rid is not None else rendered[j][0],
                     shard=name, row=r, position=pos)
    for j, (rid, *_) in enumerate(rendered):
        if j not in matched:
            sink.add("source_match", "the source record renders but no row matches it", id=rid)
    return compared
