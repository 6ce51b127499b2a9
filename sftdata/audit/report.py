"""The audit's findings and the three ways they are shown: terminal table, JSON, JUnit XML.

Why the rule catalogue lives here: every output lists *all* rules, passing or not, so CI can show
one green or red line per rule and a reader sees what was checked, not only what failed.
Violations are counted exactly but listed only up to a cap, so a wholly broken folder still gives
a readable report in bounded memory.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sftdata.audit.summary import LengthSummary

RULES: dict[str, str] = {
    "shard_integrity": "every shard the manifest lists exists with its recorded size and sha256, "
    "reads as Arrow, and no unlisted shard is present",
    "manifest_counts": "the manifest's per-shard and total rows, tokens and trained tokens match the shards",
    "tokenizer_fingerprint": "the manifest's tokenizer fingerprint and control-token ids are those "
    "of the tokenizer spec it names",
    "columns": "shards have the documented columns (id, input_ids, labels, content_hash) and types",
    "labels_length": "labels has as many entries as input_ids in every row",
    "label_matches_input": "every label is -100 or equals the input id at the same position (unshifted)",
    "token_range": "every input id lies inside the tokenizer's vocabulary",
    "single_bos": "exactly one <|begin_of_text|>, at the start of every conversation",
    "double_bos": "no conversation starts with two <|begin_of_text|> (template BOS plus tokenizer BOS)",
    "well_formed_turns": "every turn is <|start_header_id|> known-role <|end_header_id|> header-newline "
    "content closing-token, with nothing between turns",
    "trained_outside_assistant": "no trained token in BOS, headers, the header newline, or between or "
    "after turns (prompt content and padding have their own rules)",
    "prompt_trained": "no token of a system, user or tool turn is trained",
    "pad_trained": "no padding token is trained (pad ids, or closing tokens repeated after a turn's closer)",
    "assistant_turn_whole": "each assistant turn's content is trained whole or not at "
    "all, except the cut-off last turn of a truncated row (an untrained closer alone is eot_trained)",
    "eot_trained": "the closing <|eot_id|> / <|eom_id|> of every trained assistant turn is trained",
    "turn_cut_off": "no conversation ends inside its last assistant turn, before the closing token "
    "(except rows the manifest lists as truncated)",
    "row_has_trained_tokens": "every conversation has at least one trained token",
    "all_labels_masked": "some row of each dataset (shard, split or file) trains at least one token",
    "date_consistent": "every conversation with a Llama-3.1/3.2 \"Today Date:\" system line has the same date",
    "max_length": "no row is longer than the manifest's pipeline.max_length",
    "packing": "packed rows: seq_lengths sum to the row length, position_ids restart at 0 per "
    "conversation and count up, packed_ids match",
    "source_match": "re-rendering the source records gives the same input_ids and labels",
    "min_trained_fraction": "trained tokens / tokens is at least the threshold",
    "max_rejected_fraction": "rejected records / records read is at most the threshold",
}
# Rules about what a trainer loads from data without a manifest (a prepared folder's manifest and
# `sftdata run` already guarantee them, so its report does not list them).
INPUT_RULES: dict[str, str] = {
    "has_rows": "every file, datasets folder and split holds rows (a 0-row file, a datasets folder "
    "whose state.json lists no data file, or a DatasetDict without splits fails)",
    "declared_features": "what the data declares about its columns (dataset_info.json, a Parquet file's "
    "huggingface metadata) matches them, as datasets.load_from_disk requires",
    "label_convention": "the labels are read in the convention named (--labels, --trainer), else declared by "
    "the data, else unshifted; data that looks shifted the other way, or a named convention that "
    "contradicts the declared one, fails",
    "mask_values": "a loss-mask column holds only 0 and 1 (false and true): -1 ascends the gradient of "
    "a trainer that multiplies the loss by the mask, other values are weights",
}
ALL_RULES: dict[str, str] = {**RULES, **INPUT_RULES}
# the rule order of a report on data without a manifest: the input rules after `columns`
FOREIGN_ORDER: tuple[str, ...] = tuple(r for k in RULES for r in ((k, *INPUT_RULES) if k == "columns" else (k,)))
ROLE_NAMES = ("other", "system", "user", "assistant", "ipython", "tool", "unknown")
# rules that only a manifest can feed: without one they are "skip (no manifest)", never pass
MANIFEST_RULES = ("shard_integrity", "manifest_counts", "tokenizer_fingerprint", "max_length", "max_rejected_fraction")
REPORT_FORMAT = "sftdata-audit"
REPORT_VERSION = 1


class Violations:
    """Counts every violation exactly but keeps details only for the first ``max_per_rule`` of each
    rule, so a wholly broken dataset costs bounded memory and Python time."""

    def __init__(self, max_per_rule: int = 1000) -> None:
        self.max_per_rule = max_per_rule
        self.counts: Counter[str] = Counter()
        self.items: list[dict[str, Any]] = []
        self._listed: Counter[str] = Counter()

    def room(self, rule: str) -> int:
        return max(0, self.max_per_rule - self._listed[rule])

    def add(self, rule: str, message: str, *, id: str | None = None, shard: str | None = None,
            row: int | None = None, position: int | None = None, count: int = 1) -> None:
        self.counts[rule] += count
        if self._listed[rule] < self.max_per_rule:
            self._listed[rule] += 1
            self.items.append({"rule": rule, "id": id, "shard": shard, "row": row,
                               "position": position, "message": message})

    def extend(self, other: Violations) -> None:
        """Add what ``other`` found after what this sink holds, as if it had been found here: the
        counts add up and the items are cut at this sink's ``max_per_rule``."""
        self.counts.update(other.counts)
        for item in other.items:
            if self._listed[item["rule"]] < self.max_per_rule:
                self._listed[item["rule"]] += 1
                self.items.append(item)


@dataclass
class RowStats:
    """What the rows add up to; merged over slices and shards for the report and the manifest check."""

    rows: int = 0
    conversations: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    truncated_rows: int = 0
    role_tokens: np.ndarray = field(default_factory=lambda: np.zeros(len(ROLE_NAMES), np.int64))
    role_trained: np.ndarray = field(default_factory=lambda: np.zeros(len(ROLE_NAMES), np.int64))
    role_turns: np.ndarray = field(default_factory=lambda: np.zeros(len(ROLE_NAMES), np.int64))
    shape: LengthSummary = field(default_factory=LengthSummary)  # row lengths and trained fractions

    def merge(self, other: RowStats) -> None:
        for name in ("rows", "conversations", "tokens", "trained_tokens", "truncated_rows"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.role_tokens += other.role_tokens
        self.role_trained += other.role_trained
        self.role_turns += other.role_turns
        self.shape.merge(other.shape)


def violation_line(v: dict[str, Any]) -> str:
    where = [f"id={v['id']!r}" if v.get("id") is not None else None,
             f"shard={v['shard']}" if v.get("shard") else None,
             f"row={v['row']}" if v.get("row") is not None else None,
             f"position={v['position']}" if v.get("position") is not None else None]
    return f"{v['rule']}: {' '.join(w for w in where if w)}: {v['message']}"


@dataclass
class AuditReport:
    """Everything ``sftdata audit`` found. ``ok`` is true when no rule failed (exit code 0)."""

    path: str
    statuses: dict[str, str]  # rule -> "pass" | "fail" | "skip", in RULES order
    violations: list[dict[str, Any]]
    violation_counts: dict[str, int]
    stats: dict[str, Any]
    thresholds: dict[str, float | None] = field(default_factory=dict)
    integrity: dict[str, Any] | None = None
    tokenizer: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    skip_reasons: dict[str, str] = field(default_factory=dict)  # rule -> why it was not checked
    input: dict[str, Any] | None = None  # what was read and how labels were found (None: a prepared folder)
    row_reader: Any = None  # (shard, row) -> inspect.Row for the HTML samples of data without a manifest
    # The location as given, URI query included (``path`` drops it: it may hold credentials or
    # endpoints); only the HTML page uses it, to read its sample rows. Not part of the JSON.
    location: str = ""
    mixture: dict[str, Any] | None = None  # a split run's per-source figures (sftdata.audit.mixture)

    @property
    def ok(self) -> bool:
        return all(s != "fail" for s in self.statuses.values())

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def status_text(self, rule: str) -> str:
        """``pass``, ``fail``, or ``skip (why)``."""
        status = self.statuses[rule]
        why = self.skip_reasons.get(rule) if status == "skip" else None
        return f"{status} ({why})" if why else status

    def failed_rules(self) -> list[str]:
        return [r for r, s in self.statuses.items() if s == "fail"]

    def to_json(self, *, timing: bool = False) -> dict[str, Any]:
        """The ``--json`` report (schemas/audit-report.schema.json). Wall-clock timing is left out
        unless asked for, so auditing the same folder twice gives byte-identical files."""
        out = {
            "format": REPORT_FORMAT,
            "format_version": REPORT_VERSION,
            "path": self.path,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "rules": [{"name": r, "description": ALL_RULES[r], "status": s,
                       "violations": int(self.violation_counts.get(r, 0)),
                       "skip_reason": self.skip_reasons.get(r) if s == "skip" else None}
                      for r, s in self.statuses.items()],
            "violations_total": int(sum(self.violation_counts.values())),
            "violations_listed": len(self.violations),
            "violations": self.violations,
            "thresholds": self.thresholds,
            "stats": self.stats,
            "tokenizer": self.tokenizer,
            "integrity": self.integrity,
            "samples": self.samples,
            "input": self.input,
        }
        if self.mixture is not None:
            out["mixture"] = self.mixture
        if timing:
            out["timing"] = self.timing
        return out

    def summary_text(self, *, color: bool = False, max_listed: int = 50, mixture: bool = True) -> str:
        """The terminal summary: three small tables, the listed violations and a verdict.

        Drawn by hand rather than with rich: importing rich costs more than checking a
        million-token folder, and CI (where the audit runs most) reads plain text anyway.
        ``color`` adds ANSI colours for a terminal; ``mixture``: the mixture table, if the folder has one.
        """
        paint = _painter(color)
        s = self.stats
        rec = s["records"]
        overview = [("rows", f"{s['rows']:,}"), ("conversations", f"{s['conversations']:,}"),
                    ("tokens", f"{s['tokens']:,}"),
                    ("trained tokens", f"{s['trained_tokens']:,} ({s['trained_fraction']:.1%})"),
                    ("truncated rows", f"{s['truncated_rows']:,}")]
        if s.get("packed") and s.get("packing_efficiency") is not None:
            overview.append(("packing efficiency", f"{s['packing_efficiency']:.1%}"))
        if not self.input:  # only a manifest counts rejected records
            overview.append(("records rejected", f"{rec['rejected_total']:,} of {rec['records_read']:,} "
                             f"({rec['rejected_fraction']:.1%})"))
        if self.timing.get("tokens_per_second"):
            overview.append(("row checks", f"{self.timing['row_check_seconds']:.2f} s, "
                             f"{self.timing['tokens_per_second'] / 1e6:,.2f} M tokens/s"))
        if self.input:
            overview.insert(0, ("read as", self.input["description"]))
            conv = self.input.get("label_convention")
            if conv:
                overview.insert(1, ("labels convention", f"{conv['assumed']} ({conv['source']})"))
        out = [_table(f"sftdata audit: {self.path}", None, overview, "<>")]
        style = {"pass": "green", "fail": "red", "skip": "dim"}
        out.append(_table("rules", ("rule", "status", "violations"),
                          [(rule, paint(self.status_text(rule), style[status]), str(self.violation_counts.get(rule, 0)))
                           for rule, status in self.statuses.items()], "<<>"))
        if rec["rejected"]:
            out.append(_table("rejected records by reason", ("reason", "records"),
                              [(r, f"{n:,}") for r, n in sorted(rec["rejected"].items(), key=lambda kv: -kv[1])],
                              "<>"))
        if mixture and self.mixture is not None:
            from sftdata.audit.mixture import mixture_rows

            out.append(_table(f"mixture by source (this folder: {self.mixture.get('split')} split)",
                              ("source", "split", "rows", "tokens", "trained tokens", "share of split tokens"),
                              mixture_rows(self.mixture), "<<>>>>"))
        out += [paint("FAIL", "red") + " " + violation_line(v) for v in self.violations[:max_listed]]
        rest = sum(self.violation_counts.values()) - min(max_listed, len(self.violations))
        if rest > 0:
            out.append(f"... and {rest:,} more violation(s); --json lists up to the per-rule cap")
        out.append(paint("OK: every rule holds", "green") if self.ok
                   else paint(f"FAILED: {', '.join(self.failed_rules())}", "red"))
        return "\n".join(out) + "\n"

    def to_junit(self) -> str:
        """JUnit XML: one testcase per rule; a failure lists the offending ids; unchecked rules skip."""
        import xml.etree.ElementTree as ET

        fails = self.failed_rules()
        skipped = [r for r, s in self.statuses.items() if s == "skip"]
        suites = ET.Element("testsuites", name="sftdata audit", tests=str(len(self.statuses)),
                            failures=str(len(fails)), errors="0", skipped=str(len(skipped)))
        suite = ET.SubElement(suites, "testsuite", name="sftdata.audit", tests=str(len(self.statuses)),
                              failures=str(len(fails)), errors="0", skipped=str(len(skipped)),
                              time=f"{self.timing.get('seconds', 0.0):.3f}")
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="path", value=self.path)
        for rule, status in self.statuses.items():
            case = ET.SubElement(suite, "testcase", classname="sftdata.audit", name=rule, time="0")
            if status == "skip":
                ET.SubElement(case, "skipped", message=self.skip_reasons.get(rule)
                              or "not checked for this folder or these options")
            elif status == "fail":
                listed = [v for v in self.violations if v["rule"] == rule]
                count = self.violation_counts.get(rule, 0)
                ids = sorted({str(v["id"] if v["id"] is not None else v["shard"]) for v in listed})
                failure = ET.SubElement(case, "failure", type=rule,
                                        message=f"{count} violation(s): {ALL_RULES[rule]}; ids: {', '.join(ids[:20])}")
                lines = [violation_line(v) for v in listed]
                if count > len(listed):
                    lines.append(f"... and {count - len(listed)} more")
                failure.text = "\n".join(lines)
        ET.indent(suites)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


_ANSI = {"green": "\x1b[32m", "red": "\x1b[1;31m", "dim": "\x1b[2m"}
_ESCAPES = re.compile(r"\x1b\[[0-9;]*m")


def _painter(color: bool):
    if not color:
        return lambda text, style: text
    return lambda text, style: f"{_ANSI[style]}{text}\x1b[0m"


def _table(title: str, header: tuple[str, ...] | None, rows: list[tuple[str, ...]], align: str) -> str:
    """A boxed table under its title; ``align`` holds '<' or '>' per column. Nothing is cut or
    wrapped, so ids and paths stay copyable."""
    def visible(cell: str) -> int:
        return len(_ESCAPES.sub("", cell))

    widths = [max([visible(r[c]) for r in rows] + ([len(header[c])] if header else [0]))
              for c in range(len(align))]

    def line(cells: tuple[str, ...]) -> str:
        padded = [c + " " * (w - visible(c)) if a == "<" else " " * (w - visible(c)) + c
                  for c, w, a in zip(cells, widths, align, strict=True)]
        return "│ " + " │ ".join(padded) + " │"

    def rule(left: str, mid: str, right: str) -> str:
        return left + mid.join("─" * (w + 2) for w in widths) + right

    lines = [title, rule("┌", "┬", "┐")]
    if header:
        lines += [line(header), rule("├", "┼", "┤")]
    lines += [line(r) for r in rows] + [rule("└", "┴", "┘")]
    return "\n".join(lines)
