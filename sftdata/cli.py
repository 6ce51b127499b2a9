"""The `sftdata` command line: a thin click layer over the library.

Library exceptions become ``click.ClickException`` (exit 1) or usage errors (exit 2); the work
itself lives in ``sftdata.runner``, ``sftdata.audit`` and ``sftdata.training``.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import click

from sftdata import __version__
from sftdata.choices import Dedupe, ExecutorName, Packing, TemplateName, TrainOn, Truncation, values
from sftdata.cli_options import reading_options

EPILOG_RUN = """\b
Example:
  sftdata run pipelines/llama3.2.yaml --input 'data/*.jsonl' --output out/llama32 --workers 2
  sftdata run pipelines/llama3.1.yaml --input chats.jsonl --output out/x --max-length 4096 --resume
"""


def library_errors(fn):
    """Turn the library's expected failures (the ``SftdataError`` family) into clean CLI errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # Imported here, not at the top: `sftdata --help` should not pay for any library import.
        from sftdata.errors import SftdataError

        try:
            return fn(*args, **kwargs)
        except SftdataError as exc:
            err = click.ClickException(str(exc))
            err.exit_code = exc.exit_code
            raise err from None
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None

    return wrapper


_FAST_EXIT: list[str] = []  # the command that ran, when it may end the process without the teardown


def fast_exit(fn):
    """Mark a command whose process may end without the interpreter's teardown (``LazyGroup.main``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _FAST_EXIT.append(fn.__name__)
        return fn(*args, **kwargs)

    return wrapper


def _end_process(code: object) -> None:
    """Exit now with ``code``, as ``sys.exit`` would, minus freeing every object one by one.

    Why: tearing down the interpreter (freeing the BPE engine, the rank tables, numpy and pyarrow
    objects one by one) took 0.25 s of a 1.05 s ``sftdata run`` on 50 records and 0.09 s of a
    0.95 s ``sftdata audit`` (measured), after the work was done and every file closed. What
    a normal exit does that matters still happens: non-daemon threads are joined, the ``atexit``
    handlers run (weakref finalizers, multiprocessing, logging, Ray's shutdown) and stdout and
    stderr are flushed. ``SFTDATA_FULL_EXIT=1`` keeps the ordinary exit, and so does a process
    under a profiler or tracer (cProfile, pyinstrument, coverage write their results at exit).
    """
    import atexit
    import os
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what Python's own exit reports as status 120
            status = status or 120
    os._exit(status & 0xFF)


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


class LazyGroup(click.Group):
    """Subcommands in other packages are imported only when used: `sftdata run` does not pay
    for the audit's, the trainer's or the overlap tool's imports."""

    # name -> (module, attribute, the command's first help paragraph: what `sftdata --help` lists,
    # so listing the commands imports none of them; tests/cli/test_cli_help.py holds it to the real one)
    LAZY = {
        "audit": ("sftdata.audit.command", "audit_cmd",
                  "Check every row of a prepared folder PATH: labels train only assistant answers, whole turns, no "
                  "shifted labels, well-formed Llama-3 turns, and a manifest that matches the shards."),
        "verify": ("sftdata.audit.command", "verify_cmd",
                   "Check that every shard the manifest of FOLDER lists is present, whole and unchanged (size, "
                   "sha256, readable Arrow, row and token counts), and that no unlisted shard is there."),
        "inspect": ("sftdata.audit.command", "inspect_cmd",
                    "Print one row of FOLDER token by token: boundaries visible, trained tokens highlighted."),
        "train": ("sftdata.training.command", "train_cmd",
                  "Fine-tune MODEL on the prepared shards in DATA_DIR with TRL's SFTTrainer."),
        "overlap": ("sftdata.overlap", "overlap_cmd",
                    "Records of DIR_A whose content (or prompt) also occurs in DIR_B, with ids on both sides."),
        "plan": ("sftdata.training.plan_command", "plan_cmd",
                 "Report how the prepared shards in DATA_DIR will batch, before anyone rents a GPU."),
        "export": ("sftdata.export.command", "export_cmd",
                   "Export the prepared FOLDER in the layout a trainer reads as it is, with the same tokens trained."),
    }

    def main(self, args=None, *rest, **kwargs):  # noqa: ANN001, ANN201 - click's signature
        """click's ``main``; a process started as ``sftdata ...`` (no ``args`` given: not a test's
        ``CliRunner``) that ran a ``fast_exit`` command ends through ``_end_process``."""
        import os

        try:
            return super().main(args, *rest, **kwargs)
        except SystemExit as exc:
            if (args is None and _FAST_EXIT and os.environ.get("SFTDATA_FULL_EXIT") != "1"
                    and sys.getprofile() is None and sys.gettrace() is None):  # profilers write at exit
                _end_process(exc.code)
            raise

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.LAZY))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY and name not in self.commands:
            import importlib

            module, attr, _ = self.LAZY[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with each command not imported yet standing in as its help paragraph."""
        commands = [(name, self.commands.get(name) or click.Command(name, help=self.LAZY[name][2]))
                    for name in self.list_commands(ctx)]
        commands = [(name, cmd) for name, cmd in commands if not cmd.hidden]
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in commands])


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
@click.option("--executor", type=click.Choice(values(ExecutorName)), default="local", show_default=True)
@click.option("--ray-address", help="Join this Ray cluster (default: RAY_ADDRESS, else a local instance).")
@click.option("--no-audit", is_flag=True, help="Skip the audit at the end of the run.")
@reading_options
@click.option("--packing", type=click.Choice(values(Packing)), help="Pack conversations into rows of max-length.")
@click.option("--dedupe", type=click.Choice(values(Dedupe)), help="Quarantine exact duplicates (first kept).")
@pipeline_options
@library_errors
@fast_exit
def run(pipeline, inputs, output, workers, resume, overwrite, executor, ray_address, no_audit, input_format,
        fields, packing, dedupe, **opts) -> None:
    """Run PIPELINE (a YAML file; defaults when omitted) over the inputs into OUTPUT."""
    from sftdata.config import load_pipeline
    from sftdata.errors import UnusableRunError
    from sftdata.progress import RunProgress
    from sftdata.runner import run_pipeline
    from sftdata.summary import print_run_summary, run_audit_after

    settings = load_pipeline(pipeline, _overrides(input_format=input_format, fields=fields or None, packing=packing,
                                                  dedupe=dedupe, **opts))
    try:
        with RunProgress(enabled=sys.stderr.isatty()) as progress, _interrupts_as_keyboard():
            summary = run_pipeline(settings, list(inputs), output, workers=workers, resume=resume,
                                   overwrite=overwrite, executor=executor, ray_address=ray_address,
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
    if settings.audit_enabled and not no_audit:
        ok = run_audit_after(summary, settings)
        if not ok:
            raise SystemExit(1)


@contextlib.contextmanager
def _interrupts_as_keyboard():
    """SIGTERM (a scheduler's stop, ``kill``) ends a run like Ctrl-C: cleanly, with the resume hint."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


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
@library_errors
@fast_exit
def validate(paths, pipeline, template, max_errors, input_format, fields) -> None:
    """Schema and semantic checks only; exits 1 if any record is invalid."""
    from sftdata.config import load_pipeline
    from sftdata.process.validation import validate_files
    from sftdata.stages.read.jsonl import expand_inputs
    from sftdata.summary import validate_hints

    settings = load_pipeline(pipeline, _overrides(template=template, input_format=input_format, fields=fields or None))
    files = expand_inputs(list(paths))
    n = bad = 0
    formats: dict[str, str] = {}
    reasons: set[str] = set()
    for checked in validate_files(list(paths), settings, formats):
        n += 1
        if checked.ok:
            continue
        bad += 1
        reasons.add(checked.rejection.reason)
        if bad <= max_errors:
            click.echo(checked.describe())
    click.echo(f"{n} records checked, {n - bad} valid, {bad} invalid", err=True)
    for hint in validate_hints([p.resolve() for p in files], settings, formats, reasons):
        click.echo(hint, err=True)
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
