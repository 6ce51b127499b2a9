"""The plain summary printed at the end of `sftdata run`, and the audit that follows it."""

from __future__ import annotations

import click

from sftdata.constants import AUDIT_NAME


def format_run_summary(manifest: dict) -> str:
    c, t = manifest["counts"], manifest["totals"]
    rejected = sum(c["rejected"].values())
    frac = t["trained_tokens"] / t["tokens"] if t["tokens"] else 0.0
    lines = [
        f"records read      {c['records_read']:>12,}   (blank lines skipped: {c['blank_lines']:,})",
        f"rows written      {c['records_written']:>12,}   in {len(manifest['shards'])} shard(s)",
        f"rejected          {rejected:>12,}   -> quarantine.jsonl",
    ]
    for reason, n in sorted(c["rejected"].items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {reason:<26}{n:>8,}")
    lines += [
        f"tokens            {t['tokens']:>12,}",
        f"trained tokens    {t['trained_tokens']:>12,}   ({frac:.1%} of tokens)",
        f"special-token text kept as text in {c['special_text_records']:,} record(s)",
        f"truncated rows    {c['truncated_records']:>12,}",
        f"exact duplicates  {c['duplicate_records']:>12,}",
        f"ids used twice+   {c.get('repeated_ids', 0):>12,}   (kept; listed in manifest.json)",
    ]
    return "\n".join(lines)


def print_run_summary(summary) -> None:
    skipped = f" ({summary.chunks_skipped} resumed from a previous run)" if summary.chunks_skipped else ""
    from sftdata.storage import display

    click.echo(f"sftdata run -> {display(summary.output)}: {summary.chunks_total} chunk(s){skipped}")
    detected = summary.manifest["pipeline"]["input_format"] == "auto"
    for item in summary.manifest["inputs"]:
        how = " (detected)" if detected else ""
        click.echo(f"input {item['name']}: {item['format']}{how}, {item['bytes']:,} bytes")
    click.echo(format_run_summary(summary.manifest))


def run_audit_after(summary, settings) -> bool:
    """Audit the finished folder, write audit.json beside the manifest, print the verdict."""
    import json

    from sftdata.audit import run_audit

    report = run_audit(summary.output, min_trained_fraction=settings.min_trained_fraction,
                       max_rejected_fraction=settings.max_rejected_fraction)
    from sftdata.storage import Folder

    Folder(summary.output).write_bytes(AUDIT_NAME, (json.dumps(report.to_json(), indent=2, sort_keys=True)
                                                    + "\n").encode())
    click.echo(report.summary_text())
    return bool(report.ok)
