"""The `sftdata` command line: a thin click layer over the library.

Library exceptions become ``click.ClickException`` (exit 1) or usage errors (exit 2); the work
itself lives in ``sftdata.runner``, ``sftdata.audit`` and ``sftdata.training``.
"""

from __future__ import annotations

import functools
import sys

import click

from sftdata import __version__

EPILOG_RUN = """\b
Example:
  sftdata run pipelines/llama3.2.yaml --input 'data/*.jsonl' --output out/llama32 --workers 2
  sftdata run pipelines/llama3.1.yaml --input chats.jsonl --output out/x --max-length 4096 --resume
"""


def library_errors(fn):
    """Turn the library's expected failures into clean CLI errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # Imported here, not at the top: `sftdata audit` and `--help` should not pay for YAML,
        # the readers and the tokenizer module.
        from sftdata.config import ConfigError
        from sftdata.readers.jsonl import InputError
        from sftdata.runner import RunError
        from sftdata.tokenizer import TokenizerError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, InputError, TokenizerError, RunError) as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None

    return wrapper


def pipeline_options(fn):
    """Options shared by commands that take pipeline settings; each overrides the YAML."""
    opts = [
        click.option("--template", type=click.Choice(["llama3", "llama3.1", "llama3.2"]), help="Chat template."),
        click.option("--tokenizer", help="builtin:llama3 (default), a tokenizer folder or a hub id."),
        click.option("--date-string", help="Date in the 3.1/3.2 system header (default 26 Jul 2024)."),
        click.option("--max-length", type=int, help="Longest row in tokens (default 8192)."),
        click.option("--truncation", type=click.Choice(["drop", "truncate"]), help="What to do with longer records."),
        click.option("--train-on", type=click.Choice(["all_assistant", "last_assistant"]), help="Turns to train."),
        click.option("--shard-size", help="Target shard size, e.g. 256MB or 1MiB."),
        click.option("--chunk-size", help="Input bytes per unit of work (default: auto)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _overrides(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}


class LazyGroup(click.Group):
    """Subcommands in other packages are imported only when used: `sftdata run` does not pay
    for the audit's, the trainer's or the overlap tool's imports."""

    LAZY = {"audit": ("sftdata.audit.command", "audit_cmd"), "verify": ("sftdata.audit.command", "verify_cmd"),
            "inspect": ("sftdata.audit.command", "inspect_cmd"), "train": ("sftdata.training.command", "train_cmd"),
            "overlap": ("sftdata.overlap", "overlap_cmd"),
            "export": ("sftdata.export.command", "export_cmd")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.LAZY))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY and name not in self.commands:
            import importlib

            module, attr = self.LAZY[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
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
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--ray-address", help="Join this Ray cluster (default: RAY_ADDRESS, else a local instance).")
@click.option("--no-audit", is_flag=True, help="Skip the audit at the end of the run.")
@click.option("--input-format", type=click.Choice(["auto", "messages", "sharegpt", "alpaca", "text",
                                                   "prompt_completion"]),
              help="Record format of the input (auto: detected per file).")
@click.option("--packing", type=click.Choice(["none", "bfd"]), help="Pack conversations into rows of max-length.")
@click.option("--dedupe", type=click.Choice(["none", "exact"]), help="Quarantine exact duplicates (first kept).")
@pipeline_options
@library_errors
def run(pipeline, inputs, output, workers, resume, overwrite, executor, ray_address, no_audit, input_format,
        packing, dedupe, **opts) -> None:
    """Run PIPELINE (a YAML file; defaults when omitted) over the inputs into OUTPUT."""
    from sftdata.config import load_pipeline
    from sftdata.progress import RunProgress
    from sftdata.runner import run_pipeline
    from sftdata.summary import print_run_summary, run_audit_after

    settings = load_pipeline(pipeline, _overrides(input_format=input_format, packing=packing, dedupe=dedupe, **opts))
    with RunProgress(enabled=sys.stderr.isatty()) as progress:
        summary = run_pipeline(settings, list(inputs), output, workers=workers, resume=resume,
                               overwrite=overwrite, executor=executor, ray_address=ray_address,
                               progress=progress.update)
    print_run_summary(summary)
    if settings.audit_enabled and not no_audit:
        ok = run_audit_after(summary, settings)
        if not ok:
            raise SystemExit(1)


@main.command(epilog="""\b
Example:
  sftdata validate data/train.jsonl 'more/*.jsonl'
  sftdata validate --template llama3 chats.jsonl
""")
@click.argument("paths", nargs=-1, required=True)
@click.option("--pipeline", type=click.Path(dir_okay=False), help="Take template and limits from this YAML.")
@click.option("--template", type=click.Choice(["llama3", "llama3.1", "llama3.2"]), help="Template rules to apply.")
@click.option("--max-errors", type=int, default=1000, show_default=True, help="Stop printing after this many.")
@library_errors
def validate(paths, pipeline, template, max_errors) -> None:
    """Schema and semantic checks only; exits 1 if any record is invalid."""
    from sftdata.config import load_pipeline
    from sftdata.readers.jsonl import expand_inputs
    from sftdata.readers.sources import plan_chunks
    from sftdata.stages import validate_chunk
    from sftdata.storage import display

    settings = load_pipeline(pipeline, _overrides(template=template))
    files = expand_inputs(list(paths))
    n = bad = 0
    for chunk in plan_chunks(files, 64 << 20, settings.input_format):
        for line, rej in validate_chunk(chunk, settings):
            n += 1
            if rej is None:
                continue
            bad += 1
            if bad <= max_errors:
                where = f"{display(chunk.path)}:{line}"
                rid = f" id={rej.id}" if rej.id else ""
                click.echo(f"{where}{rid}: [{rej.reason}] {rej.message}")
    click.echo(f"{n} records checked, {n - bad} valid, {bad} invalid", err=True)
    if bad:
        raise SystemExit(1)



if __name__ == "__main__":
    main()
