"""The `sftdata` command line: a thin click layer over the library.

Every command is a ``sftdata.cli_errors.SftdataCommand``: its errors become exit codes in one
place, by the policy of ``sftdata.errors.exit_status``. The work itself lives in ``sftdata.runner``, ``sftdata.audit``, ``sftdata.export``
and ``sftdata.training``.
"""

from __future__ import annotations

import sys

import click

from sftdata.choices import Dedupe, ExecutorName, Packing, TemplateName, TrainOn, Truncation, values
from sftdata.cli_errors import SftdataGroup
from sftdata.cli_options import reading_options
from sftdata.version import __version__

EPILOG_RUN = """\b
Example:
  sftdata run pipelines/llama3.2.yaml --input 'data/*.jsonl' --output out/llama32 --workers 2
  sftdata run pipelines/llama3.1.yaml --input chats.jsonl --output out/x --max-length 4096 --resume
"""


def pipeline_options(fn):
    """Options shared by commands that take pipeline settings; each overrides the YAML."""
    opts = [
        click.option("--template", type=click.Choice(values(TemplateName)), help="Chat template."),
        click.option("--tokenizer", help="builtin:llama3 (default), a tokenizer folder or a hub id."),
        click.option("--tools-in-system", "tools_in_user_message", flag_value=False, default=None, help="Tool definitions in the system message (tools_in_user_message: false)."),
        click.option("--date-string", help="Date in the 3.1/3.2 system header (default 26 Jul 2024)."),
        click.option("--max-length", type=int, help="Longest row in tokens (default 8192)."),
        click.option("--truncation", type=click.Choice(values(Truncation)), help="What to do with longer records."),
        click.option("--train-on", type=click.Choice(values(TrainOn)), help="Turns to train."),
        click.option("--shard-size", help="Target shard size, e.g. 256MB or 1MiB."),
        click.option("--chunk-size", help="Input bytes per unit of work (default: auto)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _overrides(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}


@click.group(cls=SftdataGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Example:
  sftdata run pipelines/demo.yaml --input examples/demo.jsonl --output out/demo
  sftdata audit out/demo --html report.html
  sftdata train out/demo --model builtin:tiny-llama3 --output-dir out/model --max-steps 8
""")
@click.version_option(__version__, prog_name="sftdata")
def main() -> None:
    """Turn chat fine-tuning records into Llama-3 token ids and response-only labels, as audited shards."""


@main.command(epilog=EPILOG_RUN)
@click.argument("pipeline", type=click.Path(dir_okay=False), required=False)
@click.option("--input", "-i", "inputs", multiple=True, required=True, help="A file, folder or glob; repeatable.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--workers", "-w", type=click.IntRange(min=1), help="Worker processes (default: CPU count).")
@click.option("--resume", is_flag=True, help="Continue a killed run in OUTPUT from its committed chunks.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty OUTPUT folder.")
@click.option("--executor", type=click.Choice(values(ExecutorName)), default="local", show_default=True)
@click.option("--ray-address", help="Join this Ray cluster (default: RAY_ADDRESS, else a local instance).")
@click.option("--no-audit", is_flag=True, help="Skip the audit at the end of the run.")
@reading_options
@click.option("--packing", type=click.Choice(values(Packing)), help="Pack conversations into rows of max-length.")
@click.option("--dedupe", type=click.Choice(values(Dedupe)), help="Quarantine exact duplicates (first kept).")
@pipeline_options
def run(pipeline, inputs, output, workers, resume, overwrite, executor, ray_address, no_audit, input_format,
        fields, strict_keys, tree_paths, packing, dedupe, **opts) -> None:
    """Run PIPELINE (a YAML file; defaults when omitted) over the inputs into OUTPUT."""
    from sftdata import api
    from sftdata.errors import UnusableRunError
    from sftdata.progress import RunProgress
    from sftdata.summary import audit_after, print_run_summary

    settings = api.pipeline_settings(pipeline, **_overrides(input_format=input_format, fields=fields or None,
                                                            packing=packing, dedupe=dedupe, strict_keys=strict_keys,
                                                            tree_paths=tree_paths, **opts))
    try:
        with RunProgress(enabled=sys.stderr.isatty()) as progress:
            summary = api.run(settings, inputs=list(inputs), output=output, workers=workers, resume=resume,
                              overwrite=overwrite, executor=executor, ray_address=ray_address, audit=False,
                              progress=progress.update)
    except UnusableRunError as exc:
        if exc.summary is not None:
            print_run_summary(exc.summary, list(inputs))
        raise
    except KeyboardInterrupt:
        from sftdata.errors import InterruptedRun
        from sftdata.storage import display

        raise InterruptedRun(f"interrupted; the chunks committed so far are kept in {display(output)}: rerun the same "
                             "command with --resume to continue") from None
    print_run_summary(summary, list(inputs))
    if settings.audit_enabled and not no_audit:  # after the summary is shown (api.run(audit=True) audits first)
        report = audit_after(summary, settings)
        click.echo(report.summary_text())
        if not report.ok:
            raise SystemExit(1)


@main.command(epilog="""\b
Example:
  sftdata validate data/train.jsonl 'more/*.jsonl'
  sftdata validate --template llama3 chats.jsonl
""")
@click.argument("paths", nargs=-1, required=True)
@click.option("--pipeline", type=click.Path(dir_okay=False), help="Take template and limits from this YAML.")
@click.option("--template", type=click.Choice(values(TemplateName)), help="Template rules to apply.")
@click.option("--max-errors", type=int, default=1000, show_default=True, help="Stop printing after this many.")
@reading_options
def validate(paths, pipeline, template, max_errors, input_format, fields, strict_keys, tree_paths) -> None:
    """Schema and semantic checks only; exits 1 if any record is invalid."""
    from sftdata import api

    found = api.validate(list(paths), pipeline=pipeline, max_listed=max_errors,
                         on_invalid=lambda checked: click.echo(checked.describe()),
                         **_overrides(template=template, input_format=input_format, fields=fields or None,
                                      strict_keys=strict_keys, tree_paths=tree_paths))
    click.echo(f"{found.records} records checked, {found.records - found.invalid_total} valid, "
               f"{found.invalid_total} invalid", err=True)
    if found.unknown_keys:
        from sftdata.stages.adapt.keys import top_names

        shown = ", ".join(f"{name} ({k})" for name, k in top_names(found.unknown_keys, 10).items())
        click.echo(f"unknown keys, not rendered (records per name; --strict-keys rejects them): {shown}", err=True)
    for hint in found.hints:
        click.echo(hint, err=True)
    if not found.ok:
        raise SystemExit(1)


def _register() -> None:
    """The commands that live in other packages; their modules import only click and small things
    at module level (tests/cli/test_architecture.py holds `sftdata --help` to no heavy library)."""
    from sftdata.audit.command import audit_cmd, inspect_cmd, verify_cmd
    from sftdata.export.command import export_cmd
    from sftdata.overlap import overlap_cmd
    from sftdata.training.command import train_cmd
    from sftdata.training.plan_command import plan_cmd

    for command in (audit_cmd, verify_cmd, inspect_cmd, train_cmd, overlap_cmd, plan_cmd, export_cmd):
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
