"""``sftdata run RECIPE.yaml --output OUT`` for a recipe with ``sources:``: run, summary, audit per split,
and the mix's lines of the summary (per source and split: what was read, dropped and delivered)."""

from __future__ import annotations

import sys

import click

from sftdata.config import Settings
from sftdata.mix.recipe import Recipe


def run_mix_command(settings: Settings, recipe: Recipe, inputs: tuple[str, ...], output: str, *, workers: int | None,
                    resume: bool, overwrite: bool, executor: str, ray_address: str | None, no_audit: bool) -> None:
    """Run the mix, print each folder's summary and the mix's accounting, then audit each split."""
    from sftdata.errors import InterruptedRun, UsageError
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
            click.echo(report.summary_text(mixture=False))  # mix_lines below say it
            failed = failed or not report.ok
    for line in mix_lines(summary.mix):
        click.echo(line)
    if failed:
        raise SystemExit(1)


def mix_lines(mix: dict) -> list[str]:
    """One block per source: read, rejected, duplicates, sampling factor, budget, rows/tokens per split."""
    lines = [f"mix (seed {mix['seed']}): {len(mix['sources'])} source(s)"]
    for name, s in mix["sources"].items():
        rejected = sum(s["rejected"].values())
        lines.append(f"  {name}: read {s['records_read']:,}, rejected {rejected:,} (duplicates "
                     f"{s['duplicates_removed']:,}), not taken {s['records_not_taken']:,}, sampling factor "
                     f"{s['sampling_factor']}")
        asked, got = s["budget"]["asked"], s["budget"]["delivered"]
        lines.append(f"    budget asked {_pair(asked)}, delivered {_pair(got)}")
        for split, v in s["splits"].items():
            lines.append(f"    {split:<6} rows {v['rows']:>10,}  tokens {v['tokens']:>12,}  trained "
                         f"{v['trained_tokens']:>12,}")
    return lines


def _pair(d: dict) -> str:
    return ", ".join(f"{k} {v:,}" if isinstance(v, (int, float)) and not isinstance(v, bool) else k
                     for k, v in d.items())
