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
    unknown = c.get("unknown_keys") or {}
    if unknown:
        lines.append(f"unknown keys      {len(unknown):>12,}   name(s), not rendered (records per name; "
                     "--strict-keys rejects them)")
        for name, n in sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))[:10]:
            lines.append(f"  {name[:40]:<40}{n:>8,}")
    lines += [
        f"tokens            {t['tokens']:>12,}",
        f"trained tokens    {t['trained_tokens']:>12,}   ({frac:.1%} of tokens)",
        f"special-token text kept as text in {c['special_text_records']:,} record(s)",
        f"truncated rows    {c['truncated_records']:>12,}   (listed in truncated_ids.jsonl)",
        f"exact duplicates  {c['duplicate_records']:>12,}   (listed in duplicates.jsonl)",
        f"ids used twice+   {c.get('repeated_ids', 0):>12,}   (kept; listed in repeated_ids.jsonl)",
    ]
    return "\n".join(lines)


# Reasons that mean "this record is not in the format it was read as".
SHAPE_REASONS = frozenset({"missing_field", "adapter_alpaca", "adapter_sharegpt", "no_chat_structure",
                           "wrong_type", "not_an_object", "unknown_role", "not_a_message_list",
                           "adapter_query_response", "adapter_pairs", "adapter_tree"})


def shape_hint(name: str, seen, read_as: str) -> str | None:
    """What to pass for a file whose records were read as ``read_as`` (``seen``: its ``Detection``):
    the format it looks like, the flags that would read it, or that no adapter reads it."""
    from sftdata.stages.adapt import FORMATS
    from sftdata.stages.adapt.detect import describe_keys

    if seen.format is None and seen.suggestion:
        return (f"hint: {name}: records look like a known shape under other names (keys seen: "
                f"{describe_keys(seen.keys)}); pass {seen.suggestion}")
    if seen.format is None:
        return (f"hint: {name}: no adapter reads this shape (keys seen: {describe_keys(seen.keys)}); the formats "
                f"are {', '.join(FORMATS)} (README, Input), with --field NAME=SOURCE for other key names")
    if seen.format != read_as:
        return (f"hint: {name}: records look like {seen.format}, read as {read_as}; pass --input-format "
                f"{seen.format} (or --input-format auto)")
    return None


def _local_files(inputs: list[str] | None, n: int) -> list:
    """The input files in manifest order (the manifest keeps names only), or Nones."""
    if inputs:
        try:
            from sftdata.stages.read.jsonl import expand_inputs

            files = expand_inputs(inputs)
            if len(files) == n:
                return files
        except Exception:  # noqa: BLE001 - a hint is never worth a failure
            pass
    return [None] * n


def _sniff(path, settings):
    """What a local input looks like (None for remote inputs or unreadable files)."""
    from pathlib import Path

    from sftdata.stages.read.sources import sniff

    if not isinstance(path, Path) or not path.exists():
        return None
    return sniff(path, settings)


def input_lines(manifest: dict, inputs: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(one line per input, hints): the format each input was read as, and what to pass when
    its records were rejected because they are in another format (or in none sftdata knows)."""
    from sftdata.process.rerender import settings_from_manifest
    from sftdata.stages.adapt.detect import describe_keys

    settings = settings_from_manifest(manifest)
    auto = settings.input_format == "auto"
    shape_rejects = any(manifest["counts"]["rejected"].get(r) for r in SHAPE_REASONS)
    lines, hints = [], []
    files = _local_files(inputs, len(manifest["inputs"])) if auto or shape_rejects else [None] * len(manifest["inputs"])
    for item, path in zip(manifest["inputs"], files, strict=True):
        seen = _sniff(path, settings) if path is not None else None
        unknown = seen is not None and seen.format is None and seen.sampled > 0
        if auto and unknown:
            how = f"unknown format (keys seen: {describe_keys(seen.keys)}), read as {item['format']}"
        else:
            how = f"{item['format']}{' (detected)' if auto else ''}"
        lines.append(f"input {item['name']}: {how}, {item['bytes']:,} bytes")
        if not shape_rejects or seen is None or seen.sampled == 0:
            continue
        hint = shape_hint(item["name"], seen, item["format"])
        if hint:
            hints.append(hint)
    return lines, hints


def validate_hints(files: list, settings, formats: dict[str, str], reasons: set[str]) -> list[str]:
    """The hints of ``input_lines`` for ``sftdata validate``: ``formats`` maps a file's path to
    the format it was read as, ``reasons`` are the rejection reasons seen."""
    if not reasons & SHAPE_REASONS:
        return []
    hints = []
    for path in files:
        seen = _sniff(path, settings)
        if seen is None or seen.sampled == 0:
            continue
        hint = shape_hint(path.name, seen, formats.get(str(path), settings.input_format))
        if hint:
            hints.append(hint)
    return hints


def print_run_summary(summary, inputs: list[str] | None = None) -> None:
    """The run's summary; ``inputs`` (the --input values) let it look at files for its hints."""
    skipped = f" ({summary.chunks_skipped} resumed from a previous run)" if summary.chunks_skipped else ""
    from sftdata.storage import display

    click.echo(f"sftdata run -> {display(summary.output)}: {summary.chunks_total} chunk(s){skipped}")
    lines, hints = input_lines(summary.manifest, inputs)
    for line in lines:
        click.echo(line)
    click.echo(format_run_summary(summary.manifest))
    for hint in hints:
        click.echo(hint)


def audit_after(summary, settings):
    """Audit the finished folder and write audit.json beside the manifest; returns the report."""
    import json

    from sftdata.audit.run import run_audit
    from sftdata.storage import Folder

    report = run_audit(summary.output, min_trained_fraction=settings.min_trained_fraction,
                       max_rejected_fraction=settings.max_rejected_fraction)
    Folder(summary.output).write_bytes(AUDIT_NAME, (json.dumps(report.to_json(), indent=2, sort_keys=True)
                                                    + "\n").encode())
    return report

