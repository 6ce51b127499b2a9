"""What every audit source shares: the tokenizer and its check against the manifest, row statistics,
record accounting, the rules' context, and the final report."""


from __future__ import annotations

import time
from typing import Any

from sftdata.audit.integrity import AuditError
from sftdata.audit.pitfalls import finish_dates
from sftdata.audit.report import ROLE_NAMES, RULES, AuditReport, RowStats, Violations
from sftdata.audit.slice_view import RuleContext

__all__ = ["THRESHOLDS", "finish_report", "rule_context"]

_ROLE_CACHE: dict[str, dict] = {}  # tokenizer fingerprint -> role-token tuple -> role code
THRESHOLDS = ("min_trained_fraction", "max_rejected_fraction")


def audit_tokenizer(spec: str) -> Any:
    from sftdata.tokenizer import TokenizerError, load_tokenizer  # lru-cached per spec

    try:
        return load_tokenizer(spec)
    except (TokenizerError, OSError, ValueError) as exc:
        raise AuditError(f"cannot load the tokenizer {spec!r}: {exc}") from exc


def check_tokenizer(manifest: dict, tok: Any, newline: list[int], sink: Violations) -> None:
    """The manifest must describe the tokenizer its spec loads today, id for id."""
    info = manifest.get("tokenizer") or {}
    claims = {"fingerprint": info.get("fingerprint"),
              "fingerprints.tokenizer": (manifest.get("fingerprints") or {}).get("tokenizer")}
    for where, value in claims.items():
        if value is not None and value != tok.fingerprint:
            sink.add("tokenizer_fingerprint", f"manifest {where} {value} but {tok.spec!r} loads as {tok.fingerprint}")
    if claims["fingerprint"] is None:
        sink.add("tokenizer_fingerprint", "manifest has no tokenizer.fingerprint")
    actual = {"bos_id": tok.bos_id, "eot_id": tok.eot_id, "start_header_id": tok.start_header_id,
              "end_header_id": tok.end_header_id, "eom_id": tok.eom_id, "python_tag_id": tok.python_tag_id,
              "pad_id": tok.pad_id, "vocab_size": tok.vocab_size, "header_newline_ids": newline}
    for key, value in actual.items():
        if key in info and info[key] != value:
            sink.add("tokenizer_fingerprint", f"manifest tokenizer.{key} is {info[key]}, the tokenizer says {value}")


def stats_of(total: RowStats, manifest: dict, max_length: int | None, packed: bool, shards: int) -> dict:
    shape = total.shape
    counts = manifest.get("counts") or {}
    rejected = {str(k): int(v) for k, v in (counts.get("rejected") or {}).items()}
    read = int(counts.get("records_read", counts.get("records_written", total.conversations) + sum(rejected.values())))
    roles = {name: i for i, name in enumerate(ROLE_NAMES)}
    return {
        "shards": shards,
        "rows": total.rows,
        "conversations": total.conversations,
        "tokens": total.tokens,
        "trained_tokens": total.trained_tokens,
        "trained_fraction": total.trained_tokens / total.tokens if total.tokens else 0.0,
        "truncated_rows": total.truncated_rows,
        "packed": packed,
        "max_length": max_length,
        "packing_efficiency": total.tokens / (total.rows * max_length) if max_length and total.rows else None,
        "length": shape.figures(),
        "length_histogram": shape.length_histogram(max_length),
        "trained_fraction_histogram": shape.fraction_histogram(),
        "tokens_per_role": {r: int(total.role_tokens[i]) for r, i in roles.items()},
        "trained_tokens_per_role": {r: int(total.role_trained[i]) for r, i in roles.items()},
        "turns_per_role": {r: int(total.role_turns[i]) for r, i in roles.items() if r != "other"},
        "records": {"records_read": read, "records_written": int(counts.get("records_written", total.conversations)),
                    "rejected": rejected, "rejected_total": sum(rejected.values()),
                    "rejected_fraction": sum(rejected.values()) / read if read else 0.0},
    }


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def check_records(sink: Violations, stats: dict, counts: dict, conversations: int | None,
                   thresholds: dict[str, float | None]) -> None:
    """The manifest's record counts add up, and the two thresholds hold."""
    rec = stats["records"]
    if "records_read" in counts and rec["records_read"] != rec["records_written"] + rec["rejected_total"]:
        sink.add("manifest_counts", f"records_read {rec['records_read']} is not records_written "
                 f"{rec['records_written']} + rejected {rec['rejected_total']}")
    if conversations is not None and "records_written" in counts and counts["records_written"] != conversations:
        sink.add("manifest_counts", f"records_written {counts['records_written']} but the shards hold "
                 f"{conversations} conversations")
    low = thresholds["min_trained_fraction"]
    if low is not None and stats["trained_fraction"] < low:
        sink.add("min_trained_fraction", f"trained fraction {stats['trained_fraction']:.4f} is below {low}")
    high = thresholds["max_rejected_fraction"]
    if high is not None and rec["rejected_fraction"] > high:
        sink.add("max_rejected_fraction", f"rejected fraction {rec['rejected_fraction']:.4f} "
                 f"({rec['rejected_total']} of {rec['records_read']}) is above {high}")


def rule_context(tok: Any, *, truncated_ids: frozenset[str] = frozenset(), max_length: int | None = None,
                 allow_plain: bool = False) -> RuleContext:
    """The token ids and settings the row rules need, from a loaded tokenizer."""
    closers = tuple(i for i in (tok.eot_id, tok.eom_id) if i is not None)
    pads = {tok.pad_id, tok.token_id("<|finetune_right_pad_id|>"), tok.token_id("<|end_of_text|>")}
    return RuleContext(bos_id=tok.bos_id, start_header_id=tok.start_header_id, end_header_id=tok.end_header_id,
                       closer_ids=closers, header_newline_ids=tuple(tok.header_newline_ids), vocab_size=tok.vocab_size,
                       decode=tok.decode, truncated_ids=truncated_ids, max_length=max_length,
                       _roles=_ROLE_CACHE.setdefault(tok.fingerprint, {}), allow_plain=allow_plain,
                       pad_ids=frozenset(i for i in pads if i is not None and i not in closers))


def finish_report(*, path: str, location: str, sink: Violations, total: RowStats, stats: dict, skip: dict[str, str],
                  samples: list[dict], thresholds: dict, ctx: RuleContext, started: float, rows_seconds: float,
                  **fields: Any) -> AuditReport:
    """Statuses (fail, skip with its reason, pass), sample rows with violations, timing: the report.
    ``fields["rules"]``: the rules to list, in order (default: `RULES`)."""
    finish_dates(ctx, sink)
    statuses = {r: "fail" if sink.counts[r] else "skip" if r in skip else "pass" for r in fields.pop("rules", RULES)}
    seen = {(s["shard"], s["row"]) for s in samples}
    for v in sink.items:  # and up to three rows with violations
        if v["row"] is not None and (v["shard"], v["row"]) not in seen and len(seen) < len(samples) + 3:
            seen.add((v["shard"], v["row"]))
            samples.append({"shard": v["shard"], "row": v["row"], "why": v["rule"]})
    return AuditReport(
        path=path, location=location, statuses=statuses, violations=sink.items, violation_counts=dict(sink.counts),
        stats=stats, thresholds=thresholds, samples=samples, skip_reasons=skip,
        timing={"seconds": time.perf_counter() - started, "row_check_seconds": rows_seconds,
                "tokens_per_second": total.tokens / rows_seconds if rows_seconds > 0 else 0.0}, **fields)


