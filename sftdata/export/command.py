"""Click command ``export``: argument parsing and exit codes only (0 done, 2 refused or I/O error).

Why thin: the checks and the writing live in ``sftdata.export.core`` where tests reach them
without a subprocess; this layer only prints the counts (``sftdata.cli`` maps `ExportError` to exit code 2).
"""

from __future__ import annotations

import click

from sftdata.cli_errors import SftdataCommand
from sftdata.export.targets import INFO, Target

_TARGETS = "\n".join(f"  {t.value:<16} {INFO[t].summary}" for t in Target)


@click.command("export", cls=SftdataCommand, epilog=f"""\b
Targets:
{_TARGETS}
\b
Example:
  sftdata export out/run1 --to axolotl --output out/run1-axolotl
  sftdata export out/train --validation out/val --to llama-factory --output out/lf
  sftdata export out/packed --to torchtune --output out/tt --max-seq-len 8192
\b
Exit codes: 0 exported, 1 the disk filled up, 2 refused (not a prepared folder, failed audit,
rows the target cannot represent, an OUT that is not empty or not an earlier export, /, home, the
current folder, the source) or a path that cannot be used, 130 interrupted (Ctrl-C/SIGTERM);
nothing is left half-written, and OUT is never missing.""")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--to", "target", required=True, type=click.Choice([t.value for t in Target]), help="Trainer layout.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Export folder.")
@click.option("--validation", type=click.Path(file_okay=False),
              help="A second prepared folder, exported as the validation split (a DatasetDict).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in OUTPUT (only its own files).")
@click.option("--skip-audit", is_flag=True, help="Export without auditing the prepared folder first.")
@click.option("--unpack", is_flag=True, help="Write packed rows as one conversation per row.")
@click.option("--max-seq-len", type=click.IntRange(1), help="torchtune packed row length (default: max_length).")
def export_cmd(folder: str, target: str, output: str, validation: str | None, overwrite: bool,
               skip_audit: bool, unpack: bool, max_seq_len: int | None) -> None:
    """Export the prepared FOLDER in the layout a trainer reads as it is, with the same tokens trained."""
    from sftdata.errors import InterruptedRun
    from sftdata.export.core import export_folder
    from sftdata.mix.splits import split_folders_of

    splits = dict(split_folders_of(folder))
    if splits:  # a split run's folder: train, and eval as the validation split
        if validation is not None:
            raise click.UsageError(f"{folder} is a split run's folder: its eval split is the validation split; "
                                   "drop --validation")
        from sftdata.export.targets import INFO, Target

        if not INFO[Target(target)].validation:
            raise click.UsageError(f"{folder} is a split run's folder and {target} exports have no validation split: "
                                   f"export {splits['train']} (and {splits.get('eval')}) on their own")
        folder, validation = splits["train"], splits.get("eval")
    try:
        manifest = export_folder(folder, target, output, validation=validation, overwrite=overwrite,
                                 skip_audit=skip_audit, unpack=unpack, max_seq_len=max_seq_len)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the staging folder was removed on the way out
        raise InterruptedRun(f"interrupted; {output} is as it was before this export (or, if the export "
                             "had just finished, the new export); rerun the same command to export again") from None
    for split, c in manifest["counts"].items():
        click.echo(f"{split}: {c['rows']} rows, {c['conversations']} conversations, {c['tokens']} tokens, "
                   f"{c['trained_tokens']} trained -> {output} ({target})", err=True)
