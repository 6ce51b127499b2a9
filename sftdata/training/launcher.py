"""Train a causal LM on prepared shards with TRL's ``SFTTrainer``, without letting TRL touch the data.

Why a launcher and not a bare ``SFTTrainer`` call: the shards already hold the exact token ids of
the chat template and audited response-only labels. Left to its defaults, TRL would re-tokenize,
truncate to 1024 tokens, rebuild labels from ``input_ids`` and train in bf16 with gradient
checkpointing. Here dataset preparation is skipped (``dataset_kwargs={"skip_prepare_dataset":
True}``), ``max_length`` is ``None``, ``packing``/``assistant_only_loss``/``completion_only_loss``
are off, and a collator of our own pads or concatenates rows, so ``input_ids`` and ``labels`` reach
the model exactly as written. Before any step it refuses data the model cannot use: a folder that
is not a finished run, shards that fail the mask audit, a tokenizer with another fingerprint than
the manifest's, or token ids beyond the model's vocabulary.

Padding-free (``--padding-free``, automatic for packed shards) concatenates the rows of a batch into
one row with ``position_ids`` that restart at 0 per conversation and no ``attention_mask``;
transformers then builds a block-diagonal causal mask (sdpa, eager) or varlen calls (flash
attention), so conversations do not attend to one another, and the label at each conversation's
first position is ignored so no token is predicted across a boundary.

Multi-GPU: the same command runs under a distributed launcher, one process per device, e.g.
``accelerate launch -m sftdata.cli train DIR --model M --output-dir OUT`` or
``torchrun --nproc-per-node 8 -m sftdata.cli train DIR --model M --output-dir OUT``; only rank 0
writes the outputs. ``--batch-size`` is per device.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constants import FORMAT_VERSION, IGNORE_INDEX, MANIFEST_NAME
from .tiny_model import TINY_SPEC, TINY_VOCAB_SIZE, build_tiny_llama3

DATA_MANIFEST_NAME = "data_manifest.json"
LOSS_HISTORY_NAME = "loss_history.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# Settings this launcher owns: any other value would make TRL prepare, truncate or re-mask the data.
_FIXED: dict[str, tuple[Any, ...]] = {
    "dataset_kwargs": ({"skip_prepare_dataset": True},),
    "max_length": (None,),
    "packing": (False,),
    "assistant_only_loss": (False,),
    "completion_only_loss": (False, None),
}
# Our defaults where TRL's suit a GPU cluster but not this tool (TRL: bf16 and checkpointing on).
_DEFAULTS: dict[str, Any] = {
    **{k: v[0] for k, v in _FIXED.items()},
    "bf16": False,
    "report_to": "none",
    "remove_unused_columns": False,
    "logging_first_step": True,
}


class TrainError(Exception):
    """Settings or data that cannot be trained on; raised before any training step."""


@dataclass
class TrainOptions:
    """What ``sftdata train`` was asked to do; ``None`` leaves a setting to the config or default."""

    data_dir: Path
    model: str
    output_dir: Path
    max_steps: int | None = None
    epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    seed: int | None = None
    bf16: bool | None = None
    gradient_checkpointing: bool | None = None
    padding_free: bool | None = None
    config_file: Path | None = None
    overrides: Sequence[str] = ()
    skip_audit: bool = False


@dataclass
class PreparedRun:
    """A trainer ready to call ``.train()`` on, with what was learned while checking the data."""

    trainer: Any
    manifest: dict
    data_dir: Path
    output_dir: Path
    padding_free: bool
    settings: dict = field(default_factory=dict)


def _log_default(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- settings
def sft_fields() -> dict[str, dataclasses.Field]:
    """The settable fields of TRL's ``SFTConfig`` (the keys a config file or ``--set`` may use)."""
    from trl import SFTConfig

    return {f.name: f for f in dataclasses.fields(SFTConfig) if f.init}


def _coerce(fld: dataclasses.Field, value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string and ``no`` as false; give fields the type they take."""
    if isinstance(value, bool) and "bool" not in str(fld.type):
        return "yes" if value else "no"  # e.g. `save_strategy: no`
    if isinstance(value, str):
        for cast, name in ((int, "int"), (float, "float")):
            if name in str(fld.type):
                try:
                    return cast(value)
                except ValueError:
                    pass
    return value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs, each value parsed as a YAML scalar (``true``, ``3``, ``null``, ``{a: 1}``)."""
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

    Returns the settings and the padding-free request (``None`` = not asked either way), which is
    kept out of ``SFTConfig``: TRL refuses a custom collator when its own ``padding_free`` is on.
    """
    import yaml

    fields = sft_fields()
    from_file: dict[str, Any] = {}
    if opts.config_file is not None:
        try:
            from_file = yaml.safe_load(Path(opts.config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TrainError(f"cannot read the train config {opts.config_file}: {exc}") from exc
        if not isinstance(from_file, dict):
            raise TrainError(f"{opts.config_file} must be a mapping of SFTConfig settings")
    user = {**from_file, **parse_overrides(opts.overrides)}
    unknown = sorted(k for k in user if k not in fields)
    if unknown:
        raise TrainError(f"unknown SFTConfig setting(s): {', '.join(unknown)}")
    ckpt = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    for old in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):  # deprecated aliases
        new = old.replace("gradient", "activation")
        if old in user and new in fields:
            user.setdefault(new, user.pop(old))
    for key, allowed in _FIXED.items():
        if key in user and user[key] not in allowed:
            raise TrainError(
                f"{key}={user[key]!r} is not allowed: the shards are already tokenized, truncated and "
                f"masked, and sftdata train feeds them to the model untouched ({key} must be {allowed[0]!r})"
            )
    flags: dict[str, Any] = {"output_dir": str(opts.output_dir)}
    if opts.max_steps is not None and opts.epochs is not None:
        raise TrainError("give either --max-steps or --epochs, not both")
    if opts.max_steps is not None:
        flags["max_steps"] = opts.max_steps
    if opts.epochs is not None:
        flags.update(num_train_epochs=opts.epochs, max_steps=-1)
    for name, value in (
        ("learning_rate", opts.learning_rate),
        ("per_device_train_batch_size", opts.batch_size),
        ("gradient_accumulation_steps", opts.grad_accum),
        ("seed", opts.seed),
        ("bf16", opts.bf16),
        (ckpt, opts.gradient_checkpointing),
        ("padding_free", opts.padding_free),
    ):
        if value is not None:
            flags[name] = value
    settings = {**_DEFAULTS, ckpt: False, **user, **flags}
    settings = {k: _coerce(fields[k], v) for k, v in settings.items()}
    padding_free = settings.pop("padding_free", None)
    return settings, (None if padding_free is None else bool(padding_free))


def build_sft_config(settings: dict[str, Any]) -> Any:
    """``SFTConfig(**settings)`` with TRL's validation errors turned into ``TrainError``."""
    from trl import SFTConfig

    try:
        return SFTConfig(**{k: v for k, v in settings.items() if k != "model_init_kwargs"})
    except (TypeError, ValueError) as exc:
        raise TrainError(f"invalid training settings: {exc}") from exc


# ------------------------------------------------------------------------------------------- checks
def read_manifest(data_dir: Path) -> dict:
    """The folder's manifest; refuses folders that are not a finished ``sftdata run`` output."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise TrainError(
            f"{data_dir} is not a prepared sftdata output: it has no {MANIFEST_NAME} (`sftdata run` writes it "
            "last, so a folder without it is unfinished or was not written by sftdata)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainError(f"cannot read {path}: {exc}") from exc
    if manifest.get("format") != "sftdata-shards" or manifest.get("format_version") != FORMAT_VERSION:
        raise TrainError(
            f"{path} is not an sftdata-shards manifest of format_version {FORMAT_VERSION} "
            f"(found format={manifest.get('format')!r}, format_version={manifest.get('format_version')!r})"
        )
    return manifest


def check_audit(data_dir: Path, skip: bool) -> str:
    """Run the mask audit (``sftdata.audit.run_audit``); refuse on failure unless skipped."""
    if skip:
        return "skipped (--skip-audit)"
    try:
        from sftdata.audit import run_audit
    except ImportError as exc:
        raise TrainError(f"cannot audit {data_dir}: the audit module is unavailable ({exc}); "
                         "pass --skip-audit to train without the audit") from exc
    report = run_audit(data_dir)
    if not report.ok:
        raise TrainError(f"the shards in {data_dir} fail the mask audit; not training on them "
                         f"(--skip-audit overrides):\n{report.summary_text()}")
    return "passed"


def load_shards(data_dir: Path) -> Any:
    """The shards as a memory-mapped ``datasets.Dataset`` (nothing is read into memory)."""
    from datasets import Dataset, load_from_disk

    try:
        ds = load_from_disk(str(data_dir))
    except Exception as exc:  # datasets raises several types for a malformed folder
        raise TrainError(f"cannot load the shards in {data_dir}: {exc}") from exc
    if not isinstance(ds, Dataset):
        raise TrainError(f"{data_dir} holds a {type(ds).__name__}, expected one Dataset of shards")
    missing = [c for c in ("input_ids", "labels") if c not in ds.column_names]
    if missing:
        raise TrainError(f"the shards in {data_dir} lack the column(s) {', '.join(missing)}")
    if len(ds) == 0:
        raise TrainError(f"the shards in {data_dir} hold no rows")
    return ds


def token_id_range(ds: Any, column: str) -> tuple[int, int]:
    """(min, max) over a list column, computed by Arrow over the mapped shards; labels skip -100."""
    import pyarrow.compute as pc

    flat = pc.list_flatten(ds.data.column(column))
    if column == "labels":
        flat = pc.filter(flat, pc.not_equal(flat, IGNORE_INDEX))
    bounds = pc.min_max(flat).as_py()
    return (bounds["min"] if bounds["min"] is not None else 0), (bounds["max"] if bounds["max"] is not None else -1)


def resolve_tokenizer(model_spec: str, manifest: dict) -> tuple[Any, str]:
    """The tokenizer to save with the model, after checking its fingerprint against the manifest's.

    The model's own tokenizer wins when one is saved with it; otherwise the manifest's spec is
    loaded. Either way its ids must be the shards' ids, or the model would learn the wrong tokens.
    """
    from ..tokenizer import TokenizerError, fingerprint_of, load_tokenizer

    info = manifest.get("tokenizer") or {}
    hf, source, fingerprint = None, "", ""
    if model_spec == TINY_SPEC:
        tok = load_tokenizer()
        hf, fingerprint, source = tok.hf, tok.fingerprint, f"the builtin:llama3 tokenizer of {TINY_SPEC}"
    elif not Path(model_spec).is_dir() or any((Path(model_spec) / f).is_file() for f in _TOKENIZER_FILES):
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(model_spec)
            fingerprint, source = fingerprint_of(hf), f"the tokenizer saved with {model_spec}"
        except Exception:  # a hub id without a tokenizer, or none reachable: use the manifest's
            hf = None
    if hf is None:
        try:
            tok = load_tokenizer(info.get("spec") or "builtin:llama3")
        except TokenizerError as exc:
            raise TrainError(f"{model_spec} has no tokenizer and the manifest's cannot be loaded: {exc}") from exc
        hf, fingerprint, source = tok.hf, tok.fingerprint, f"the manifest's tokenizer {tok.spec!r}"
    if fingerprint != info.get("fingerprint"):
        raise TrainError(
            f"tokenizer fingerprint mismatch: the shards were tokenized with {info.get('spec')!r} "
            f"({info.get('fingerprint')}), but {source} has {fingerprint}; its token ids mean different text"
        )
    return hf, source


def check_vocabulary(model_vocab: int, ids: tuple[int, int], label_ids: tuple[int, int], pad_id: int, what: str) -> None:
    """Every id in the shards (and the pad id) must index a row of the model's embedding."""
    low, high = min(ids[0], label_ids[0], pad_id), max(ids[1], label_ids[1], pad_id)
    if low < 0 or high >= model_vocab:
        raise TrainError(
            f"the vocabulary of {what} has {model_vocab} entries but the shards use token ids from {low} to "
            f"{high}; use a model whose vocabulary holds the shards' tokenizer (or resize its embeddings)"
        )


def _model_vocab(model_spec: str, init_kwargs: dict) -> int:
    """The vocabulary size from the model's config, read before loading any weights."""
    if model_spec == TINY_SPEC:
        return TINY_VOCAB_SIZE
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(model_spec, trust_remote_code=init_kwargs.get("trust_remote_code", False))
    except Exception as exc:
        raise TrainError(f"cannot load the model config of {model_spec!r}: {exc}") from exc
    return int(cfg.get_text_config().vocab_size)


def load_model(model_spec: str, seed: int, init_kwargs: dict) -> Any:
    """``builtin:tiny-llama3`` (built from ``seed``), else a local directory or hub id via TRL's loader."""
    if model_spec == TINY_SPEC:
        try:
            return build_tiny_llama3(seed=seed, **init_kwargs)
        except ValueError as exc:
            raise TrainError(str(exc)) from exc
    from trl.trainer.utils import create_model_from_path

    return create_model_from_path(model_spec, **{"device_map": None, **init_kwargs})


# ----------------------------------------------------------------------------------------- collator
@dataclass
class ShardCollator:
    """Batches shard rows as they are: right padding, or one concatenated row (padding-free).

    Padded: ``input_ids`` padded with ``pad_id``, ``labels`` with ``IGNORE_INDEX``, and an
    ``attention_mask``. Padding-free: rows are concatenated with ``position_ids`` restarting per
    conversation (from the row's ``position_ids``, else its ``seq_lengths``, else one conversation
    per row), no ``attention_mask``, and the label at each conversation start ignored.
    """

    pad_id: int
    padding_free: bool = False
    pad_to_multiple_of: int | None = None
    varlen_kwargs: bool = False  # add cu_seq_lens_*/max_length_* for flash attention

    def _pad_len(self, n: int) -> int:
        m = self.pad_to_multiple_of
        return n if not m else -(-n // m) * m

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if self.padding_free:
            return self._padding_free(rows, torch)
        width = self._pad_len(max(len(r["input_ids"]) for r in rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.as_tensor(r["input_ids"])
            labels[i, :n] = torch.as_tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    def _padding_free(self, rows: list[dict[str, Any]], torch: Any) -> dict[str, Any]:
        positions = []
        for r in rows:
            n = len(r["input_ids"])
            if r.get("position_ids") is not None:
                pos = torch.as_tensor(r["position_ids"], dtype=torch.long)
            elif r.get("seq_lengths") is not None:
                pos = torch.cat([torch.arange(k) for k in r["seq_lengths"]]) if r["seq_lengths"] else torch.arange(0)
            else:
                pos = torch.arange(n)
            if len(pos) != n:
                raise ValueError(f"row has {n} tokens but its position_ids/seq_lengths cover {len(pos)}")
            positions.append(pos)
        ids = torch.cat([torch.as_tensor(r["input_ids"], dtype=torch.long) for r in rows])
        labels = torch.cat([torch.as_tensor(r["labels"], dtype=torch.long) for r in rows])
        pos = torch.cat(positions)
        labels[pos == 0] = IGNORE_INDEX  # never predict a conversation's first token from the previous one
        extra = self._pad_len(len(ids)) - len(ids)
        if extra:  # each padding token starts its own (ignored) sequence at position 0
            ids = torch.cat([ids, torch.full((extra,), self.pad_id, dtype=torch.long)])
            labels = torch.cat([labels, torch.full((extra,), IGNORE_INDEX, dtype=torch.long)])
            pos = torch.cat([pos, torch.zeros(extra, dtype=torch.long)])
        out = {"input_ids": ids[None], "labels": labels[None], "position_ids": pos[None]}
        if self.varlen_kwargs:
            starts = (pos == 0).nonzero().flatten()
            cu = torch.cat([starts, torch.tensor([len(pos)])]).to(torch.int32)
            out["cu_seq_lens_q"] = out["cu_seq_lens_k"] = cu
            out["max_length_q"] = out["max_length_k"] = int(cu.diff().max())
        return out


# --------------------------------------------------------------------------------------------- runs
def build_trainer(opts: TrainOptions, log: Callable[[str], None] = _log_default) -> PreparedRun:
    """Check settings and data, load the model, and build the ``SFTTrainer`` (nothing is trained)."""
    settings, padding_free_asked = resolve_settings(opts)
    init_kwargs = dict(settings.get("model_init_kwargs") or {})
    args = build_sft_config(settings)
    if opts.model != TINY_SPEC:
        init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    data_dir = Path(opts.data_dir)
    manifest = read_manifest(data_dir)
    audit = check_audit(data_dir, opts.skip_audit)
    ds = load_shards(data_dir)
    packed = bool({"position_ids", "seq_lengths"} & set(ds.column_names))
    if packed and padding_free_asked is False:
        raise TrainError("these shards are packed (position_ids/seq_lengths): they train only padding-free")
    padding_free = packed or bool(padding_free_asked)
    hf_tok, tok_source = resolve_tokenizer(opts.model, manifest)
    info = manifest.get("tokenizer") or {}
    pad_id = info.get("pad_id", hf_tok.pad_token_id if hf_tok.pad_token_id is not None else hf_tok.eos_token_id)
    ids, label_ids = token_id_range(ds, "input_ids"), token_id_range(ds, "labels")
    check_vocabulary(_model_vocab(opts.model, init_kwargs), ids, label_ids, pad_id, f"{opts.model} (config)")
    model = load_model(opts.model, args.seed, init_kwargs)
    rows = [model.get_input_embeddings().num_embeddings]
    if model.get_output_embeddings() is not None:
        rows.append(model.get_output_embeddings().weight.shape[0])
    check_vocabulary(min(rows), ids, label_ids, pad_id, f"{opts.model} (embeddings)")
    attn = str(getattr(model.config, "_attn_implementation", ""))
    collator = ShardCollator(pad_id, padding_free, args.pad_to_multiple_of, varlen_kwargs="flash" in attn)
    keep = [c for c in ("input_ids", "labels", "position_ids", "seq_lengths") if c in ds.column_names]
    from trl import SFTTrainer

    trainer = SFTTrainer(model=model, args=args, train_dataset=ds.select_columns(keep),
                         processing_class=hf_tok, data_collator=collator)
    totals = manifest.get("totals") or {}
    log(f"data: {len(ds)} rows, {totals.get('tokens', '?')} tokens ({totals.get('trained_tokens', '?')} trained) "
        f"from {data_dir}; audit {audit}")
    log(f"tokenizer: {tok_source}, fingerprint matches the manifest")
    log(f"model: {opts.model}, {sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {min(rows)}, "
        f"attention {attn or '?'}, {'padding-free' if padding_free else 'padded'} batches")
    return PreparedRun(trainer, manifest, data_dir, Path(opts.output_dir), padding_free, settings)


def loss_history(trainer: Any) -> list[dict]:
    """The logged training steps (step, loss, learning rate, grad norm, epoch) from the trainer state."""
    keys = ("step", "epoch", "loss", "learning_rate", "grad_norm", "num_tokens", "mean_token_accuracy")
    return [{k: e[k] for k in keys if k in e} for e in trainer.state.log_history if "loss" in e]


def save_outputs(run: PreparedRun) -> None:
    """Model + tokenizer, trainer state, loss history, and the data's manifest (its provenance)."""
    trainer, out = run.trainer, run.output_dir
    trainer.save_model(str(out))
    trainer.save_state()
    if trainer.is_world_process_zero():
        shutil.copyfile(run.data_dir / MANIFEST_NAME, out / DATA_MANIFEST_NAME)
        (out / LOSS_HISTORY_NAME).write_text(json.dumps(loss_history(trainer), indent=1) + "\n")


def train(opts: TrainOptions, log: Callable[[str], None] = _log_default) -> PreparedRun:
    """Refuse or train, then write everything to ``opts.output_dir``; returns the finished run."""
    run = build_trainer(opts, log)
    run.trainer.train()
    save_outputs(run)
    history = loss_history(run.trainer)
    if history:
        log(f"trained {run.trainer.state.global_step} steps: loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}")
    log(f"saved model, tokenizer, trainer_state.json, {LOSS_HISTORY_NAME} and {DATA_MANIFEST_NAME} to {run.output_dir}")
    return run
