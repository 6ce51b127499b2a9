"""The ``sftdata plan`` click command: options in, :mod:`sftdata.planning.plan` out, text or JSON.

Kept thin: the figures come from :func:`sftdata.planning.plan.make_plan` (and ``sftdata.training.probing.probe_plan`` with
``--model``), so reports and CI read the same numbers. Library refusals become one clear line and
exit status 1. Registered in ``sftdata.cli``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sftdata.cli_errors import SftdataCommand
from sftdata.training.command import MEMORY


def _int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not out or min(out) < 1:
        raise click.BadParameter("give positive integers, e.g. 1,2,4,8")
    return out


@click.command(
    "plan",
    cls=SftdataCommand,
    epilog=(
        "\b\nExamples:\n"
        "  sftdata plan out/demo\n"
        "  sftdata plan out/data --batch-tokens 4096,8192,16384 --grad-accum 4 --world-size 8 --json\n"
        "  sftdata plan out/demo --model builtin:tiny-llama3 --device cpu --memory-limit 4GiB"
    ),
)
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--batch-size", "batch_sizes", callback=_int_list, metavar="N,N,...",
              help="Rows per micro-batch to compare (default 1,2,4,...,32).")
@click.option("--batch-tokens", "batch_tokens", callback=_int_list, metavar="N,N,...",
              help="Token budgets to compare (default 1, 2, 4, 8, 16 times the longest row).")
@click.option("--padding-free/--no-padding-free", default=None,
              help="Count batches as concatenated rows (automatic for packed shards).")
@click.option("--pad-to-multiple-of", type=click.IntRange(min=1), help="As SFTConfig.pad_to_multiple_of.")
@click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True,
              help="Micro-batches per optimizer step (for tokens per step).")
@click.option("--world-size", type=click.IntRange(min=1), default=1, show_default=True, help="Training processes.")
@click.option("--seed", type=int, default=42, show_default=True, help="Sampler seed.")
@click.option("--model", help="Also probe this model (a local folder or builtin:tiny-llama3) on --device.")
@click.option("--device", default="cpu", show_default=True, help="Where to probe: cpu, cuda, cuda:1.")
@click.option("--memory-limit", type=MEMORY, metavar="SIZE", help="The CPU probe's memory budget, e.g. 24GiB.")
@click.option("--probe-unit", type=click.Choice(["rows", "tokens"]), default="rows", show_default=True,
              help="Probe row counts or token budgets.")
@click.option("--bf16", is_flag=True, help="Probe in bf16 mixed precision.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (for CI).")
def plan_cmd(data_dir: Path, batch_sizes: list[int] | None, batch_tokens: list[int] | None,
             padding_free: bool | None, pad_to_multiple_of: int | None, grad_accum: int, world_size: int,
             seed: int, model: str | None, device: str, memory_limit: int | None, probe_unit: str, bf16: bool,
             as_json: bool) -> None:
    """Report how the prepared shards in DATA_DIR will batch, before anyone rents a GPU.

    The row-length histogram; for each size, the padding waste, micro-batches per epoch and tokens
    per optimizer step, cut by the sampler `sftdata train` uses; the longest rows; and with --model,
    the worst-case memory probe of `--batch-size auto` as a table of size -> peak memory.
    """
    from sftdata.mix.splits import split_folders_of
    from sftdata.planning.plan import make_plan, render_text
    from sftdata.training.probing import probe_plan

    splits = dict(split_folders_of(str(data_dir)))
    if splits:  # a split run's folder: `train` batches its train split
        data_dir = Path(splits["train"])
    plan = make_plan(data_dir, batch_sizes=batch_sizes, batch_tokens=batch_tokens, padding_free=padding_free,
                     pad_to_multiple_of=pad_to_multiple_of, grad_accum=grad_accum, world_size=world_size, seed=seed)
    if model is not None:
        plan = probe_plan(plan, model, device, unit=probe_unit, memory_limit=memory_limit, bf16=bf16,
                          pad_to_multiple_of=pad_to_multiple_of, seed=seed)
    click.echo(json.dumps(plan.to_dict(), indent=1) if as_json else render_text(plan))
