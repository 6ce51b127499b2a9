"""``sftdata run RECIPE.yaml --output OUT`` for a recipe with ``sources:``: run, summary, audit per split."""

from __future__ import annotations

import sys

import click

from sftdata.config import Settings
from sftdata.mix.recipe import Recipe


def run_mix_command(settings: Settings, recipe: Recipe, inputs: tuple[str, ...], output: str, *, workers: int | None,
                    resume: bool, overwrite: bool, executor: str, ray_address: str | None, no_audit: bool) -> None:
    """Run the mix, print each folder's summary and the mix's accounting, then audit each split."""
    from sftdata.errors import InterruptedRun, UsageError
    from sftdata.mix.report import mix_lines
    from sftdata.mix.run import run_mix, split_folders
    from sftdata.progress import RunProgress
    from sftdata.runner import RunSummary
    from sftdata.storage import display
    from sftdata.summary import audit_after, format_run_summary

    if inputs:
        raise UsageError("the recipe names its inputs under `sources:`; drop --input")
    try:
        with RunProgress(enabled=sys.stderr.isatty()) as progress:
            summary = run_mix(settings, recipe, output, workers=workers, resume=resume, overwrite=overwrite,
                              executor=executor, ray_address=ray_address, progress=progress.update)
    except KeyboardInterrupt:
        raise InterruptedRun(f"interrupted; the chunks committed so far are kept in {display(output)}: rerun the same "
                             "command with --resume to continue") from None
    manifests = summary.splits or {"train": summary.manifest}
    failed = False
    for name, location in split_folders(summary):
        click.echo(f"sftdata run -> {display(location)}" + (f" (split {name})" if summary.splits else ""))
        click.echo(format_run_summary(manifests[name]))
        if settings.audit_enabled and not no_audit:
            report = audit_after(RunSummary(location, manifests[name]), settings)
            click.echo(report.summary_text())
            failed = failed or not report.ok
    for line in mix_lines(summary.mix):
        click.echo(line)
    if failed:
        raise SystemExit(1)
