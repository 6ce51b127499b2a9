"""Training settings: what ``sftdata train`` was asked, merged into TRL ``SFTConfig`` arguments.

Why a module of its own: the order of precedence (our defaults < config file < ``--set`` < flags)
and the settings this tool owns (``_FIXED``: anything else would let TRL re-tokenize, truncate or
re-mask the shards) are the contract of ``sftdata train``; they are checked before any model or
data is touched, and are testable without either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sftdata.errors import TrainError

# Settings this launcher owns: any other value would make TRL prepare, truncate or re-mask the data.
_FIXED: dict[str, tuple[Any, ...]] = {
    "dataset_kwargs": ({"skip_prepare_dataset": True},),
    "max_length": (None,),
    "packing": (False,),
    "assistant_only_loss": (False,),
    "completion_only_loss": (False, None),
}
# Where TRL's defaults suit a GPU cluster, not this tool (TRL turns bf16 and checkpointing on).
_DEFAULTS: dict[str, Any] = {
    **{k: v[0] for k, v in _FIXED.items()},
    "bf16": False,
    "report_to": "none",
    "remove_unused_columns": False,  # we select the columns; TRL's own selection drops position_ids
    "logging_first_step": True,
}


@dataclass
class TrainOptions:
    """What ``sftdata train`` was asked to do; ``None`` leaves a setting to the config or default."""

    data_dir: Path
    model: str
    output_dir: Path
    max_steps: int | None = None
    epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | Literal["auto"] | None = None  # rows per micro-batch per process
    grad_accum: int | None = None
    batch_tokens: int | Literal["auto"] | None = None  # a token budget per micro-batch instead of rows
    global_batch_size: int | None = None  # rows per optimizer step over all processes (raises grad_accum)
    global_batch_tokens: int | None = None  # token budget per optimizer step over all processes
    memory_limit: int | None = None  # bytes the process may use on CPU (auto sizing)
    memory_margin: float = 0.10  # share of the device's memory kept free by auto sizing
    seed: int | None = None
    bf16: bool | None = None
    gradient_checkpointing: bool | None = None
    padding_free: bool | None = None
    config_file: Path | None = None
    overrides: Sequence[str] = ()
    skip_audit: bool = False


def sft_fields() -> dict[str, dataclasses.Field]:
    """The settable fields of TRL's ``SFTConfig``: the keys a config file or ``--set`` may use."""
    from trl import SFTConfig

    return {f.name: f for f in dataclasses.fields(SFTConfig) if f.init}


def _coerce(fld: dataclasses.Field, value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string and ``no`` as false; give each field the type it takes."""
    kind = str(fld.type)
    if isinstance(value, bool) and "bool" not in kind:
        return "yes" if value else "no"  # `save_strategy: no`
    for cast, name in ((int, "int"), (float, "float")):
        if isinstance(value, str) and name in kind:
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs, each value parsed as YAML (``true``, ``3``, ``null``, ``{a: 1}``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TrainError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise TrainError(f"--set {key}: cannot parse {raw!r} as YAML: {exc}") from exc
    return out


def resolve_settings(opts: TrainOptions) -> tuple[dict[str, Any], bool | None]:
    """SFTConfig keyword arguments: our defaults < config file < ``--set`` < CLI flags.

    Also returns the padding-free request (``None``: not asked), kept out of ``SFTConfig`` since
    TRL refuses a custom collator when its own ``padding_free`` is on.
    """
    import yaml

    fields, user = sft_fields(), {}
    if opts.config_file is not None:
        try:
            user = yaml.safe_load(Path(opts.config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TrainError(f"cannot read the train config {opts.config_file}: {exc}") from exc
        if not isinstance(user, dict):
            raise TrainError(f"{opts.config_file} must be a mapping of SFTConfig settings")
    user = {**user, **parse_overrides(opts.overrides)}
    unknown = sorted(k for k in user if k not in fields)
    if unknown:
        raise TrainError(f"unknown SFTConfig setting(s): {', '.join(unknown)}")
    ckpt = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    for old in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):  # deprecated in transformers 5
        if old in user and old.replace("gradient", "activation") in fields:
            user.setdefault(old.replace("gradient", "activation"), user.pop(old))
    for key, allowed in _FIXED.items():
        if key in user and user[key] not in allowed:
            raise TrainError(f"{key}={user[key]!r} is not allowed: the shards are already tokenized, truncated and "
                             f"masked and are trained on untouched ({key} must be {allowed[0]!r})")
    if opts.max_steps is not None and opts.epochs is not None:
        raise TrainError("give either --max-steps or --epochs, not both")
    check_batch_options(opts)
    flags = {"output_dir": str(opts.output_dir), "max_steps": opts.max_steps, "learning_rate": opts.learning_rate,
             "per_device_train_batch_size": opts.batch_size if isinstance(opts.batch_size, int) else None,
             "gradient_accumulation_steps": opts.grad_accum,
             "seed": opts.seed, "bf16": opts.bf16, ckpt: opts.gradient_checkpointing,
             "padding_free": opts.padding_free}
    if opts.epochs is not None:
        flags.update(num_train_epochs=opts.epochs, max_steps=-1)
    settings = {**_DEFAULTS, ckpt: False, **user, **{k: v for k, v in flags.items() if v is not None}}
    settings = {k: _coerce(fields[k], v) for k, v in settings.items()}
    padding_free = settings.pop("padding_free", None)
    return settings, (None if padding_free is None else bool(padding_free))


def check_batch_options(opts: TrainOptions) -> None:
    """Batch flags that contradict each other are refused before anything is loaded."""
    if opts.batch_size is not None and opts.batch_tokens is not None:
        raise TrainError("give --batch-size (rows) or --batch-tokens (a token budget), not both")
    if opts.global_batch_tokens is not None and opts.batch_tokens is None:
        raise TrainError("--global-batch-tokens goes with --batch-tokens (N or auto)")
    if opts.global_batch_size is not None and opts.batch_tokens is not None:
        raise TrainError("--global-batch-size counts rows; with --batch-tokens give --global-batch-tokens")
    if opts.grad_accum is not None and (opts.global_batch_size or opts.global_batch_tokens):
        raise TrainError("give --grad-accum or a global batch (--global-batch-size/--global-batch-tokens), not both")
    if not 0 <= opts.memory_margin < 1:
        raise TrainError(f"the memory margin is a share of the device's memory in [0, 1), not {opts.memory_margin}")


def build_sft_config(settings: dict[str, Any]) -> Any:
    """``SFTConfig(**settings)``; TRL's validation errors become ``TrainError``."""
    from trl import SFTConfig

    try:  # model_init_kwargs are ours to use: SFTTrainer ignores them for a model object
        return SFTConfig(**{k: v for k, v in settings.items() if k != "model_init_kwargs"})
    except (TypeError, ValueError) as exc:
        raise TrainError(f"invalid training settings: {exc}") from exc

