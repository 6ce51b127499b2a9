"""The audit of token data without a manifest: what TRL, Axolotl, a script or ``sftdata export`` wrote.

Why the same rules and not a lighter check: the failure modes are the same (and more frequent
outside sftdata), and the rules already work from the tokens alone. What changes is what can be
known: there is no manifest to recount, no recorded tokenizer fingerprint and no list of rows that
were truncated on purpose, so those rules say ``skip (no manifest)`` rather than pass, and a row
cut inside its last answer is a violation (``turn_cut_off``) rather than an allowance. What the
trainer loads is checked too: the declared features, that there are rows at all, that a loss
mask is 0/1, and the labels convention (`sftdata.audit.conventions`).

Each part is read in bounded slices (`sftdata.audit.slices`); a row that cannot be lined up is
refused (exit 2, `sftdata.audit.wellformed`). A tokenizer that does not fit the ids at all is an
error (exit 2), not a wall of violations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from sftdata.audit.arrays import list_parts
from sftdata.audit.columns import Layout, column_parts, layout, normalise, shift_evidence, shift_verdict
from sftdata.audit.conventions import Convention
from sftdata.audit.declared import dataset_info_problems, parquet_metadata_problems
from sftdata.audit.integrity import AuditError, MalformedDataError
from sftdata.audit.reader import Part
from sftdata.audit.report import RowStats, Violations
from sftdata.audit.shards import check_table
from sftdata.audit.slice_view import RuleContext
from sftdata.audit.wellformed import check_rows, mask_values

MAX_OUT_OF_VOCAB = 0.01  # more ids outside the vocabulary than this share: the wrong tokenizer
FIXED_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int64())), ("labels_mask", pa.list_(pa.int16()))])


def part_schema(part: Part, where: str) -> pa.Schema | None:
    """The columns of a part without reading its rows (None: a part that holds no records)."""
    from sftdata.audit.slices import arrow_schema, jsonl_schema
    from sftdata.storage.opener import regular_size

    if part.kind == "none":
        return None
    regular_size(part.path, what=where)  # a regular file (a FIFO would block), or one line
    path = part.path
    try:
        if part.kind == "arrow":
            return arrow_schema(path)
        if part.kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).schema_arrow
        if part.kind == "jsonl":
            return jsonl_schema(path, where)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise MalformedDataError(f"{where}: cannot read it as {part.kind}: {exc}") from None
    return FIXED_SCHEMA


def part_slices(part: Part, lay: Layout, where: str, bos_id: int | None) -> Iterator[tuple[int, pa.Table]]:
    """(first row, table of the columns ``lay`` uses) per bounded slice of the part."""
    from sftdata.audit import binary_formats, slices

    roles = {lay.ids: "ids", lay.labels or lay.mask: "labels" if lay.labels else "mask"}
    for name, role in ((lay.seq_lengths, "lengths"), (lay.position_ids, "lengths"), (lay.row_id, "id")):
        if name:
            roles.setdefault(name, role)
    try:
        if part.kind == "arrow":
            yield from slices.arrow_slices(part.path, where, list(roles))
        elif part.kind == "parquet":
            yield from slices.parquet_slices(part.path, where, list(roles))
        elif part.kind == "jsonl":
            yield from slices.jsonl_slices(part.path, where, roles)
        elif part.kind == "mds":
            yield from binary_formats.mds_slices(part.path, where)
        elif part.kind == "olmo":
            yield from binary_formats.olmo_slices(part.path, where, bos_id)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise MalformedDataError(f"{where}: cannot read it as {part.kind}: {exc}") from None


@dataclasses.dataclass
class Vocabulary:
    """Ids outside the tokenizer's vocabulary and header tokens seen, over a part's slices."""

    ids: int = 0
    outside: int = 0
    largest: int = 0
    headers: bool = False

    def add(self, table: pa.Table, tok: Any) -> None:
        ids, _ = list_parts(table.column("input_ids"))
        if ids.size:
            self.ids += ids.size
            self.outside += int(np.count_nonzero((ids < 0) | (ids >= tok.vocab_size)))
            self.largest = max(self.largest, int(ids.max()))
            self.headers = self.headers or bool(np.any(ids == tok.start_header_id))

    def verdict(self, tok: Any, where: str, rows: int) -> None:
        """One clear error when this tokenizer cannot have made the ids."""
        if not self.ids:
            return
        if self.outside > MAX_OUT_OF_VOCAB * self.ids:
            raise AuditError(f"{where}: {self.outside:,} of {self.ids:,} ids lie outside the vocabulary of "
                             f"{tok.spec!r} ({tok.vocab_size:,} ids; largest id {self.largest:,}): the data was "
                             "tokenized with another tokenizer (name it with --tokenizer)")
        if not self.headers:
            raise AuditError(f"{where}: no Llama-3 header token (<|start_header_id|>, id {tok.start_header_id}) "
                             f"in any of its {rows:,} rows: not Llama-3 chat data for {tok.spec!r} (another "
                             "tokenizer's ids, or a template without Llama-3 headers)")


@dataclasses.dataclass
class PartCheck:
    """What checking one part found, beyond its violations."""

    part: Part
    lay: Layout | None
    stats: RowStats
    packed: bool = False
    padding_stripped: int = 0
    detected: str | None = None
    kept: list[pa.Table] = dataclasses.field(default_factory=list)  # for --source only

    def describe(self) -> dict[str, Any]:
        lay = self.lay
        return {"name": self.part.name, "format": self.part.kind, "rows": self.stats.rows,
                "columns": lay.describe() if lay else "no rows", "labels_column": lay.labels if lay else None,
                "mask_column": lay.mask if lay else None, "shifted": bool(lay and lay.shifted),
                "shift_detected": self.detected == "shifted", "padding_stripped": self.padding_stripped}


def declared(part: Part, schema: pa.Schema, lay: Layout, sink: Violations) -> None:
    """``declared_features``: dataset_info.json (datasets folders) and Parquet metadata against the columns."""
    used = frozenset(c for c in (lay.ids, lay.labels, lay.mask, lay.seq_lengths, lay.position_ids) if c)
    problems = []
    if part.info is not None:
        problems = dataset_info_problems(part.info, schema, used)
    elif part.kind == "parquet":
        problems = parquet_metadata_problems(schema, used)
    for message in problems:
        sink.add("declared_features", message, shard=part.name)


def _slice(check: PartCheck, table: pa.Table, first: int, where: str, ctx: RuleContext, tok: Any,
           sink: Violations, evidence: np.ndarray, vocab: Vocabulary, keep: bool) -> None:
    lay, name = check.lay, check.part.name
    check_rows(table, lay, where, first)
    mask_values(table, lay, name, first, sink)
    ids, lens = column_parts(table.column(lay.ids))
    values, vlens = column_parts(table.column(lay.labels or lay.mask))
    newline = tok.header_newline_ids
    evidence += shift_evidence(ids, lens, values, vlens, lay.mask is not None, ctx.closer_ids, tok.end_header_id,
                               newline[-1] if newline else None)
    norm = normalise(table, lay, first, ctx.pad_ids)
    vocab.add(norm.table, tok)
    rid = norm.table.column("id")
    for row, pos, count, first_id in norm.trained_padding:
        sink.add("pad_trained", f"{count} trailing padding token(s) trained, first {ctx.text(first_id)} (labels "
                 "copied from input_ids before padding, or an end-of-text appended after the last turn?)",
                 id=rid[row].as_py(), shard=name, row=first + row, position=pos)
    checked = check_table(norm.table, name, ctx, sink, prepared=False, first_row=first, whole=False)
    if checked is None:  # cannot happen for a normalised table, but never pass what was not checked
        raise AuditError(f"{where}: columns cannot be checked")
    check.stats.merge(checked[0])
    check.packed |= checked[1]
    check.padding_stripped += norm.padding_stripped
    if keep:
        check.kept.append(norm.table)


def check_part(part: Part, where: str, schema: pa.Schema | None, *, columns: tuple[str | None, str | None],
               convention: Convention, ctx: RuleContext, tok: Any, sink: Violations, keep: bool) -> PartCheck:
    """Every rule over one part (``schema``: from `part_schema`), slice by slice; what it adds to the report."""
    if schema is None:
        sink.add("has_rows", "no rows: " + ("the datasets folder lists no data files" if part.kind == "none"
                                            else "the file holds no records"), shard=part.name)
        return PartCheck(part, None, RowStats())
    lay = dataclasses.replace(layout(schema, columns[0], columns[1], where), shifted=convention.shifted)
    declared(part, schema, lay, sink)
    check = PartCheck(part, lay, RowStats())
    evidence, vocab = np.zeros(3, np.int64), Vocabulary()
    for first, table in part_slices(part, lay, where, tok.bos_id):
        _slice(check, table, first, where, ctx, tok, sink, evidence, vocab, keep)
    stats = check.stats
    if not stats.rows:
        sink.add("has_rows", "no rows: the trainer would load an empty dataset", shard=part.name)
        return check
    if not stats.tokens:
        raise MalformedDataError(f"{where}: all {stats.rows:,} rows are empty (no input_ids)")
    vocab.verdict(tok, where, stats.rows)
    if not stats.trained_tokens:
        sink.add("all_labels_masked", f"not one of the {stats.rows} rows trains a token: every label is -100 "
                 "(a response template that never matched?)", shard=part.name)
    check.detected = shift_verdict(evidence, lay.mask is not None)
    if check.detected is not None and check.detected != convention.assumed:
        what = "labels look" if lay.labels else f"loss mask {lay.mask!r} looks"
        sink.add("label_convention", f"the {what} {check.detected} by one, but the data is read as {convention.assumed} "
                 f"({convention.source}): a trainer expecting {convention.assumed} labels would learn the wrong "
                 "next token; name the trainer with --trainer or the convention with --labels", shard=part.name)
    return check


def read_row(part: Part, lay: Layout, row: int, pad_ids: frozenset[int], bos_id: int) -> Any:
    """One normalised row as an ``inspect.Row`` (for the HTML samples), read from its slice."""
    from sftdata.audit.inspect import Row

    for first, table in part_slices(part, lay, part.name, bos_id):
        if first <= row < first + table.num_rows:
            one = normalise(table, lay, first, pad_ids).table.slice(row - first, 1)
            ids, labels = list_parts(one.column("input_ids"))[0], list_parts(one.column("labels"))[0]
            seq = one.column("seq_lengths")[0].as_py() if "seq_lengths" in one.column_names else None
            return Row(id=one.column("id")[0].as_py(), shard=part.name, row=row, index=row, input_ids=ids,
                       labels=labels, seq_lengths=seq)
    raise AuditError(f"{part.name}: no row {row}")
