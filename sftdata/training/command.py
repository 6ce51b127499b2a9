"""The ``sftdata train`` click command: options in, :func:`sftdata.training.launcher.train` called.

Kept thin on purpose: every check and setting lives in the launcher so that it can be used and
tested without a terminal. Library refusals (``TrainError``) become one clear line and exit status
1 (2 for a model folder refused), before any training step, in ``sftdata.cli``, which registers it.
"""

from __future__ import annotations

from pathlib import Path

import click

from sftdata.cli_errors import SftdataCommand
from sftdata.training.settings import TrainOptions


class SizeOrAuto(click.ParamType):
    """A positive integer, or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or str(value).lower() == "auto":
            return value if isinstance(value, int) else "auto"
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            self.fail(f"{value!r} is neither a positive integer nor auto", param, ctx)
        return n


class Memory(click.ParamType):
    """A byte size: ``24GiB``, ``512MB``, ``1000000``."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        from sftdata.config import parse_size

        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE_OR_AUTO, MEMORY = SizeOrAuto(), Memory()


@click.command(
    "train",
    cls=SftdataCommand,
    epilog=(
        "\b\nExamples:\n"
        "  sftdata train out/demo --model builtin:tiny-llama3 --output-dir out/demo-model --max-steps 8\n"
        "  sftdata train out/data --model ./Llama-3.2-1B-Instruct --output-dir out/m \\\n"
        "      --config pipelines/train-tiny.yaml --set lr_scheduler_type=cosine --bf16\n"
        "  sftdata train out/data --model ./Llama-3.2-1B-Instruct --output-dir out/m \\\n"
        "      --batch-tokens auto --global-batch-tokens 262144 --bf16\n"
        "  accelerate launch -m sftdata.cli train out/data --model ./Llama-3.1-8B --output-dir out/m --epochs 2"
    ),
)
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", required=True, help="Local model directory, hub id, or builtin:tiny-llama3 (CPU demo).")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the model, tokenizer, trainer state and data manifest are written.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Optimizer steps (instead of --epochs).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Passes over the shards.")
@click.option("--lr", type=float, help="Peak learning rate (SFTConfig.learning_rate).")
@click.option("--batch-size", type=SIZE_OR_AUTO, metavar="N|auto",
              help="Rows per device per micro-batch; auto: the largest that fits, probed before step 1.")
@click.option("--batch-tokens", type=SIZE_OR_AUTO, metavar="N|auto",
              help="Micro-batches by a token budget (as batched: padded length x rows, or the concatenated "
                   "length) instead of a row count; auto: the largest that fits.")
@click.option("--grad-accum", type=click.IntRange(min=1), help="Micro-batches per optimizer step.")
@click.option("--global-batch-size", type=click.IntRange(min=1),
              help="Rows per optimizer step over all processes; sets the accumulation.")
@click.option("--global-batch-tokens", type=click.IntRange(min=1),
              help="Token budget per optimizer step over all processes (with --batch-tokens); sets the accumulation.")
@click.option("--memory-limit", type=MEMORY, metavar="SIZE",
              help="Memory the process may use on CPU for auto sizing, e.g. 24GiB (CUDA asks the device).")
@click.option("--memory-margin", type=click.FloatRange(0, 1, max_open=True), default=0.10, show_default=True,
              help="Share of the device's memory auto sizing keeps free.")
@click.option("--seed", type=int, help="Seed for model init (builtin model), data order and dropout.")
@click.option("--bf16/--no-bf16", default=None, help="bf16 mixed precision (default: off).")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Recompute activations in the backward pass to save memory (default: off).")
@click.option("--padding-free/--no-padding-free", default=None,
              help="Concatenate rows with per-conversation position_ids instead of padding "
                   "(automatic for packed shards).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML mapping of SFTConfig settings.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Set any SFTConfig field; VALUE is parsed as YAML. Repeatable; wins over --config.")
@click.option("--skip-audit", is_flag=True, help="Train even if the mask audit fails or is unavailable.")
def train_cmd(data_dir: Path, model: str, output_dir: Path, max_steps: int | None, epochs: float | None,
              lr: float | None, batch_size: int | str | None, batch_tokens: int | str | None,
              grad_accum: int | None, global_batch_size: int | None, global_batch_tokens: int | None,
              memory_limit: int | None, memory_margin: float, seed: int | None,
              bf16: bool | None, gradient_checkpointing: bool | None, padding_free: bool | None,
              config_file: Path | None, overrides: tuple[str, ...], skip_audit: bool) -> None:
    """Fine-tune MODEL on the prepared shards in DATA_DIR with TRL's SFTTrainer.

    The shards' input_ids and labels are used exactly as written: TRL does not re-tokenize,
    truncate or re-mask them. Training is refused, before any step, when DATA_DIR has no
    manifest.json, the mask audit fails, the model's tokenizer differs from the manifest's, or
    the model's vocabulary cannot hold the shards' token ids. Settings: our defaults (bf16 and
    gradient checkpointing off), then --config, then --set, then the flags.
    """
    opts = TrainOptions(
        data_dir=data_dir, model=model, output_dir=output_dir, max_steps=max_steps, epochs=epochs,
        learning_rate=lr, batch_size=batch_size, grad_accum=grad_accum, seed=seed, bf16=bf16,
        batch_tokens=batch_tokens, global_batch_size=global_batch_size, global_batch_tokens=global_batch_tokens,
        memory_limit=memory_limit, memory_margin=memory_margin,
        gradient_checkpointing=gradient_checkpointing, padding_free=padding_free,
        config_file=config_file, overrides=overrides, skip_audit=skip_audit,
    )
    from sftdata.training.launcher import train

    train(opts)  # progress and loss go to stderr, from rank 0 only
