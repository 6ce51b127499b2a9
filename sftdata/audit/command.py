"""Click commands ``audit``, ``verify`` and ``inspect``: argument parsing and exit codes only.

Why thin: CI calls the library through these, and the exit code is the contract (0 every rule
holds, 1 a rule or threshold failed, 2 usage or I/O error), so all logic stays in the library
where tests reach it without a subprocess. Errors become exit codes in ``sftdata.cli`` (one
policy for every command).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sftdata.audit.conventions import CONVENTIONS, TRAINERS
from sftdata.audit.outputs import ReportFiles
from sftdata.cli_errors import SftdataCommand
from sftdata.errors import AuditError

_FOLDER = click.Path()  # a str: also a pyarrow filesystem URI such as s3://bucket/prefix
_OUT = click.Path(dir_okay=False, path_type=Path)


@click.command("audit", cls=SftdataCommand, epilog="""\b
Examples:
  sftdata audit out/run1 --json out/run1/audit.json --junit audit.xml --html audit.html \\
      --min-trained-fraction 0.2 --max-rejected-fraction 0.05
  sftdata audit trl_train_dataset/ --trainer trl   # a datasets folder another tool saved
  sftdata audit 'data/*.parquet' --mask-column loss_mask --source data.jsonl --template llama3.1
\b
Exit codes: 0 every rule holds, 1 a rule is violated or a threshold crossed, 2 usage or I/O error.""")
@click.argument("folder", type=_FOLDER, metavar="PATH")
@click.option("--json", "json_path", type=_OUT, help="Write the JSON report (schemas/audit-report.schema.json).")
@click.option("--html", "html_path", type=_OUT, help="Write a self-contained HTML page with charts and sample rows.")
@click.option("--junit", "junit_path", type=_OUT, help="Write JUnit XML, one testcase per rule.")
@click.option("--min-trained-fraction", type=click.FloatRange(0, 1),
              help="Fail if trained tokens / tokens is below this (default: manifest pipeline.audit).")
@click.option("--max-rejected-fraction", type=click.FloatRange(0, 1),
              help="Fail if rejected / read records is above this (default: manifest pipeline.audit).")
@click.option("--source", "sources", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Source records to re-render and compare row by row (repeatable).")
@click.option("--template", type=click.Choice(["llama3", "llama3.1", "llama3.2"]),
              help="No manifest: the template to render --source records with.")
@click.option("--tokenizer", help="No manifest: the tokenizer of the ids (default builtin:llama3).")
@click.option("--labels-column", help="No manifest: the column of labels (-100 = not trained).")
@click.option("--mask-column", help="No manifest: the 0/1 or bool loss-mask column (1 = trained).")
@click.option("--labels", "labels_convention", type=click.Choice(CONVENTIONS),
              help="No manifest: the labels convention. unshifted (the default): labels[i] is input_ids[i] or "
                   "-100 and the trainer shifts; shifted: labels[i] is the target of position i.")
@click.option("--trainer", type=click.Choice(sorted(TRAINERS)),
              help="No manifest: the trainer that will load the data; its labels convention is checked.")
@click.option("--shifted/--unshifted", default=None,
              help="No manifest: the older spelling of --labels shifted / --labels unshifted.")
@click.option("--no-integrity", is_flag=True, help="Skip the size and sha256 check of the shard files.")
@click.option("--max-listed", type=click.IntRange(0), default=50, show_default=True,
              help="Violations listed on the terminal.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Processes for a local prepared folder's row checks (default: one per CPU); the report "
                   "is the same for any number.")
def audit_cmd(folder: str, json_path: Path | None, html_path: Path | None, junit_path: Path | None,
              min_trained_fraction: float | None, max_rejected_fraction: float | None,
              sources: tuple[Path, ...], template: str | None, tokenizer: str | None, labels_column: str | None,
              mask_column: str | None, labels_convention: str | None, trainer: str | None, shifted: bool | None,
              no_integrity: bool, max_listed: int, workers: int | None) -> None:
    """Check every row of a prepared folder PATH: labels train only assistant answers, whole turns, no
    shifted labels, well-formed Llama-3 turns, and a manifest that matches the shards.

    PATH may also be Llama-3 token data another tool prepared, without a manifest: a datasets
    folder (save_to_disk), Parquet / Arrow / JSON Lines files or a glob of them, an MDS or an
    OLMo-core folder, with input_ids and labels or a loss mask (assistant_masks, completion_mask,
    loss_mask, labels_mask). Its labels are read unshifted unless --labels or --trainer (or the
    data itself) says otherwise; the report states the convention it assumed."""
    from sftdata import api
    from sftdata.mix.splits import split_folders_of

    options = dict(min_trained_fraction=min_trained_fraction, max_rejected_fraction=max_rejected_fraction,
                   check_integrity=not no_integrity, sources=list(sources) or None, template=template,
                   tokenizer=tokenizer, labels_column=labels_column, mask_column=mask_column, shifted=shifted,
                   labels=labels_convention, trainer=trainer, workers=workers)
    splits = split_folders_of(folder)
    if splits:
        if html_path or junit_path or sources:
            raise click.UsageError(f"{folder} is a split run's folder: give --html, --junit or --source one split "
                                   f"({splits[0][1]})")
        _audit_splits(splits, options, json_path, max_listed)
    files = ReportFiles(json_path, junit_path, html_path)
    try:
        report = api.audit_data(folder, **options)
        click.echo(report.summary_text(color=sys.stdout.isatty(), max_listed=max_listed), nl=False)
        files.write(json_path, json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
        files.write(junit_path, report.to_junit())
        if html_path:
            from sftdata.audit.html import render_html

            files.write(html_path, render_html(report))
    except BaseException:  # refused, interrupted or failed: no earlier passing report stays at these paths
        files.drop_stale()
        raise
    sys.exit(report.exit_code)


def _audit_splits(splits: list[tuple[str, str]], options: dict, json_path: Path | None, max_listed: int) -> None:
    """``audit`` of a split run: each split's folder in turn; the exit code is the worst."""
    from sftdata import api

    files = ReportFiles(json_path)
    try:
        reports = {}
        for name, location in splits:
            click.echo(f"split {name}: {location}")
            reports[name] = api.audit_data(location, **options)
            # the mixture table covers every split: shown once, after the last one
            click.echo(reports[name].summary_text(color=sys.stdout.isatty(), max_listed=max_listed,
                                                  mixture=name == splits[-1][0]), nl=False)
        files.write(json_path, json.dumps({"splits": {n: r.to_json() for n, r in reports.items()}}, indent=2,
                                          ensure_ascii=False) + "\n")
    except BaseException:
        files.drop_stale()
        raise
    sys.exit(max(r.exit_code for r in reports.values()))


@click.command("verify", cls=SftdataCommand, epilog="""\b
Example:
  sftdata verify out/run1            # after copying the folder to the training cluster
\b
Exit codes: 0 all shards match the manifest, 1 a shard is missing, extra, truncated or corrupt,
2 usage or I/O error.""")
@click.argument("folder", type=_FOLDER)
@click.option("--json", "json_path", type=_OUT, help="Write the findings as JSON.")
def verify_cmd(folder: str, json_path: Path | None) -> None:
    """Check that every shard the manifest of FOLDER lists is present, whole and unchanged
    (size, sha256, readable Arrow, row and token counts), and that no unlisted shard is there."""
    from sftdata.audit.integrity import verify_folder
    from sftdata.mix.splits import split_folders_of

    splits = split_folders_of(folder) or [("", folder)]
    files = ReportFiles(json_path)
    try:
        reports = {}
        for name, location in splits:
            if name:
                click.echo(f"split {name}: {location}")
            reports[name] = verify_folder(location)
            click.echo(reports[name].summary_text())
        out = reports[""].to_json() if "" in reports else {"splits": {n: r.to_json() for n, r in reports.items()}}
        files.write(json_path, json.dumps(out, indent=2) + "\n")
    except BaseException:  # refused or failed: no earlier report stays at the path
        files.drop_stale()
        raise
    sys.exit(0 if all(r.ok for r in reports.values()) else 1)


@click.command("inspect", cls=SftdataCommand, epilog="""\b
Example:
  sftdata inspect out/run1 --id conv-0042
  sftdata inspect out/run1 --index 0 | less      # piped: [[...]] marks trained tokens""")
@click.argument("folder", type=_FOLDER)
@click.option("--id", "row_id", help="The row (or packed conversation) id to show.")
@click.option("--index", type=click.IntRange(0), help="The row number across shards, in order (default 0).")
@click.option("--color/--no-color", default=None, help="Force colour on or off (default: on for a terminal).")
def inspect_cmd(folder: str, row_id: str | None, index: int | None, color: bool | None) -> None:
    """Print one row of FOLDER token by token: boundaries visible, trained tokens highlighted."""
    from sftdata.audit.inspect import find_row, render_row
    from sftdata.audit.integrity import load_manifest
    from sftdata.tokenizer import TokenizerError, load_tokenizer

    if row_id is not None and index is not None:
        raise click.UsageError("give --id or --index, not both")
    from sftdata.mix.splits import split_folders_of

    splits = split_folders_of(folder)
    if splits:  # a split run: the row with this id in whichever split holds it; --index: the first split's
        folder = splits[0][1]
        if row_id is not None:
            folder = next((loc for _, loc in splits if _has_id(loc, row_id)), folder)
    spec = (load_manifest(folder).get("tokenizer") or {}).get("spec") or "builtin:llama3"
    row = find_row(folder, id=row_id, index=index)
    try:
        tokenizer = load_tokenizer(spec)
    except TokenizerError as exc:  # the folder names a tokenizer that cannot be loaded: the folder is refused
        raise AuditError(f"{folder}: {exc}") from None
    use_color = sys.stdout.isatty() if color is None else color
    if use_color:
        from rich.console import Console

        Console(force_terminal=True, highlight=False).print(render_row(row, tokenizer, color=True))
    else:
        click.echo(render_row(row, tokenizer, color=False), nl=False)


def _has_id(folder: str, row_id: str) -> bool:
    from sftdata.audit.inspect import find_row

    try:
        find_row(folder, id=row_id)
    except AuditError:
        return False
    return True
