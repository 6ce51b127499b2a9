"""Token data without a manifest as an audit source: the parts another tool wrote, read in slices.

Why its own source: without a manifest, what is known comes from the data and the options: the
parts (`sftdata.audit.reader.discover`), their columns, and the labels convention, named or
declared or the strict default (`sftdata.audit.conventions`). The per-part checks are in
`sftdata.audit.foreign`; this class answers the driver's questions (`sftdata.audit.driver`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sftdata.audit.conventions import declared_convention, named_convention, resolve
from sftdata.audit.driver import RowPass
from sftdata.audit.foreign import PartCheck, check_part, part_schema, read_row
from sftdata.audit.integrity import AuditError
from sftdata.audit.reader import discover
from sftdata.audit.report import FOREIGN_ORDER, MANIFEST_RULES, Violations
from sftdata.audit.slice_view import RuleContext

DEFAULT_TOKENIZER = "builtin:llama3"


class ForeignSource:
    """A datasets folder, Parquet / Arrow / JSON Lines files or a glob, an MDS or OLMo-core folder."""

    def __init__(self, location: str, *, min_trained_fraction: float | None, sources: Sequence[str | Path] | None,
                 labels_column: str | None, mask_column: str | None, tokenizer: str | None, template: str | None,
                 labels: str | None = None, trainer: str | None = None, shifted: bool | None = None) -> None:
        if sources and not template:
            raise AuditError("--source on data without a manifest needs --template (llama3, llama3.1 or llama3.2): "
                             "the template to render the source records with")
        named = named_convention(labels, trainer, shifted)
        self.path = self.location = location
        self.kind, self.parts = discover(location)
        self.spec = tokenizer or DEFAULT_TOKENIZER
        self.columns = (labels_column, mask_column)
        self.min_trained_fraction, self.sources, self.template = min_trained_fraction, sources, template
        self.schemas = {p.name: part_schema(p, self._where(p.name)) for p in self.parts}
        columns = [(name, schema.names if schema is not None else []) for name, schema in self.schemas.items()]
        self.convention = resolve(named, declared_convention(location, columns))
        self.checks: list[PartCheck] = []

    def _where(self, name: str) -> str:
        return self.location if self.kind == "file" else f"{self.location}: {name}"

    def context(self, tok: Any, sink: Violations) -> RuleContext:
        from sftdata.audit.findings import rule_context

        conflict = self.convention.conflict()
        if conflict:
            sink.add("label_convention", conflict)
        self.ctx = rule_context(tok)
        return self.ctx

    def row_pass(self, tok: Any, ctx: RuleContext, sink: Violations) -> RowPass:
        rows = RowPass(parts=len(self.parts))
        if not self.parts:
            sink.add("has_rows", f"no rows: the {self.kind} lists no splits")
        for part in self.parts:
            check = check_part(part, self._where(part.name), self.schemas[part.name], columns=self.columns,
                               convention=self.convention, ctx=ctx, tok=tok, sink=sink, keep=bool(self.sources))
            self.checks.append(check)
            rows.total.merge(check.stats)
            rows.packed |= check.packed
            rows.first_rows(part.name, check.stats.rows)
        return rows

    def thresholds(self) -> dict[str, float | None]:
        from sftdata.audit.findings import THRESHOLDS, number

        return {k: number(self.min_trained_fraction) if k == "min_trained_fraction" else None for k in THRESHOLDS}

    def stats(self, rows: RowPass) -> dict:
        from sftdata.audit.findings import stats_of

        return stats_of(rows.total, {}, None, rows.packed, rows.parts)

    def after_rows(self, tok: Any, sink: Violations, rows: RowPass, stats: dict,
                   thresholds: dict[str, float | None]) -> None:
        from sftdata.audit.findings import check_records

        if self.sources:
            import pyarrow as pa

            from sftdata.audit.source_compare import compare_foreign

            kept = [(c.part.name, c.lay, pa.concat_tables(c.kept)) for c in self.checks if c.kept]
            compare_foreign(kept, [str(s) for s in self.sources], self.template, self.spec, tok, sink)
        check_records(sink, stats, {}, None, thresholds)

    def skip(self, rows: RowPass, thresholds: dict[str, float | None]) -> dict[str, str]:
        skip = {r: "no manifest" for r in MANIFEST_RULES}
        if not rows.packed:
            skip["packing"] = "not packed"
        if not self.sources:
            skip["source_match"] = "no --source"
        if thresholds["min_trained_fraction"] is None:
            skip["min_trained_fraction"] = "no threshold set"
        if not any(c.lay is not None and c.lay.mask for c in self.checks):
            skip["mask_values"] = "no loss-mask column"
        return skip

    def fields(self, tok: Any) -> dict[str, Any]:
        described = [c.describe() for c in self.checks]
        kinds = sorted({d["columns"] for d in described})
        info = {"kind": self.kind, "manifest": False, "tokenizer": self.spec, "parts": described,
                "label_convention": self.convention.to_json(),
                "description": f"{self.kind} without a manifest, {len(self.parts)} part(s): {'; '.join(kinds)}"}
        checks = {c.part.name: c for c in self.checks}

        def row_reader(shard: str, row: int) -> Any:
            check = checks[shard]
            return read_row(check.part, check.lay, row, self.ctx.pad_ids, tok.bos_id)

        return {"integrity": None, "tokenizer": {"spec": self.spec, "fingerprint": tok.fingerprint,
                                                  "manifest_fingerprint": None},
                "input": info, "row_reader": row_reader, "rules": FOREIGN_ORDER}
