"""Train a causal LM on prepared shards with TRL's ``SFTTrainer``, without letting TRL touch the data.

Why: the shards hold the exact ids of the chat template and audited response-only labels. Left to
its defaults TRL would re-tokenize, truncate to 1024 tokens, rebuild labels and train in bf16 with
checkpointing. Here dataset preparation is skipped (``skip_prepare_dataset``), ``max_length`` is
``None``, packing and the assistant/completion-only losses are off, and our own collator pads or
concatenates rows, so ``input_ids``/``labels`` reach the model as written. Before any step it
refuses a folder without a manifest, shards failing the mask audit, a tokenizer whose fingerprint
differs from the manifest's, and token ids beyond the model's vocabulary.

Padding-free (``--padding-free``; automatic for packed shards) concatenates a batch into one row
whose ``position_ids`` restart at 0 per conversation, without ``attention_mask``: transformers then
builds a block-diagonal causal mask (sdpa, eager) or varlen calls (flash attention), and the label
at each conversation start is ignored, so nothing is attended to or predicted across conversations.

Multi-GPU: ``accelerate launch -m sftdata.cli train DIR --model M --output-dir OUT`` (or
``torchrun --nproc-per-node 8 -m sftdata.cli train ...``) runs one process per device;
``--batch-size`` is per device and only rank 0 writes the outputs.
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
from ..errors import SftdataError
from .tiny_model import TINY_SPEC, load_model, model_vocab_size

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
# Where TRL's defaults suit a GPU cluster, not this tool (TRL turns bf16 and checkpointing on).
_DEFAULTS: dict[str, Any] = {
    **{k: v[0] for k, v in _FIXED.items()},
    "bf16": False,
    "report_to": "none",
    "remove_unused_columns": False,  # we select the columns; TRL's own selection drops position_ids
    "logging_first_step": True,
}


class TrainError(SftdataError):
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
    """A trainer ready for ``.train()``, and what was learned while checking the data."""

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
    flags = {"output_dir": str(opts.output_dir), "max_steps": opts.max_steps, "learning_rate": opts.learning_rate,
             "per_device_train_batch_size": opts.batch_size, "gradient_accumulation_steps": opts.grad_accum,
             "seed": opts.seed, "bf16": opts.bf16, ckpt: opts.gradient_checkpointing,
             "padding_free": opts.padding_free}
    if opts.epochs is not None:
        flags.update(num_train_epochs=opts.epochs, max_steps=-1)
    settings = {**_DEFAULTS, ckpt: False, **user, **{k: v for k, v in flags.items() if v is not None}}
    settings = {k: _coerce(fields[k], v) for k, v in settings.items()}
    padding_free = settings.pop("padding_free", None)
    return settings, (None if padding_free is None else bool(padding_free))


def build_sft_config(settings: dict[str, Any]) -> Any:
    """``SFTConfig(**settings)``; TRL's validation errors become ``TrainError``."""
    from trl import SFTConfig

    try:  # model_init_kwargs are ours to use: SFTTrainer ignores them for a model object
        return SFTConfig(**{k: v for k, v in settings.items() if k != "model_init_kwargs"})
    except (TypeError, ValueError) as exc:
        raise TrainError(f"invalid training settings: {exc}") from exc


# ------------------------------------------------------------------------------------------- checks
def read_manifest(data_dir: Path) -> dict:
    """The folder's manifest; refuses folders that are not a finished ``sftdata run`` output."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise TrainError(f"{data_dir} is not a prepared sftdata output: it has no {MANIFEST_NAME} (`sftdata run` "
                         "writes it last, so a folder without it is unfinished or was not written by sftdata)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainError(f"cannot read {path}: {exc}") from exc
    if manifest.get("format") != "sftdata-shards" or manifest.get("format_version") != FORMAT_VERSION:
        raise TrainError(f"{path} is not an sftdata-shards manifest of format_version {FORMAT_VERSION}")
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
    try:
        report = run_audit(data_dir)
    except Exception as exc:  # AuditError: the folder cannot be audited at all
        raise TrainError(f"the mask audit of {data_dir} could not run: {exc} (--skip-audit overrides)") from exc
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
    missing = [c for c in ("input_ids", "labels") if c not in getattr(ds, "column_names", ())]
    if not isinstance(ds, Dataset) or missing or len(ds) == 0:
        raise TrainError(f"{data_dir} does not hold one non-empty Dataset with input_ids and labels")
    return ds


def token_id_range(ds: Any, column: str) -> tuple[int, int]:
    """(min, max) of a list column, computed by Arrow over the mapped shards; labels skip -100.

    One Arrow kernel per record batch, so memory stays bounded by a batch, not the dataset.
    """
    import pyarrow.compute as pc

    lows, highs = [0], [-1]
    for chunk in ds.data.column(column).chunks:
        flat = pc.list_flatten(chunk)
        if column == "labels":
            flat = pc.filter(flat, pc.not_equal(flat, IGNORE_INDEX))
        low, high = pc.min_max(flat).as_py().values()
        if low is not None:
            lows.append(low)
            highs.append(high)
    return min(lows[1:] or lows), max(highs)


def resolve_tokenizer(model_spec: str, manifest: dict) -> tuple[Callable[[], Any], str]:
    """The tokenizer to train and save with, once its fingerprint matches the manifest's.

    The model's own tokenizer wins when one is saved with it, else the manifest's spec is used;
    either way its ids must be the shards' ids. Returns a loader (built-in tokenizers load lazily)
    and where the tokenizer came from.
    """
    from ..tokenizer import BUILTIN_LLAMA3, TokenizerError, fingerprint_of, load_tokenizer

    info, own = manifest.get("tokenizer") or {}, None
    local = Path(model_spec).is_dir()
    if model_spec != TINY_SPEC and (not local or any((Path(model_spec) / f).is_file() for f in _TOKENIZER_FILES)):
        from transformers import AutoTokenizer

        try:
            own = AutoTokenizer.from_pretrained(model_spec)
        except Exception:  # a hub id without a tokenizer, or none reachable: use the manifest's
            own = None
    if own is not None:
        fingerprint, source, loader = fingerprint_of(own), f"the tokenizer saved with {model_spec}", lambda: own
    else:
        spec = BUILTIN_LLAMA3 if model_spec == TINY_SPEC else info.get("spec") or BUILTIN_LLAMA3
        try:
            tok = load_tokenizer(spec)
        except TokenizerError as exc:
            raise TrainError(f"{model_spec} has no tokenizer and the manifest's cannot be loaded: {exc}") from exc
        source = f"{TINY_SPEC}'s {spec}" if model_spec == TINY_SPEC else f"the manifest's {spec!r}"
        fingerprint, source, loader = tok.fingerprint, f"{source} tokenizer", lambda: tok.hf
    if fingerprint != info.get("fingerprint"):
        raise TrainError(f"tokenizer fingerprint mismatch: the shards were tokenized with {info.get('spec')!r} "
                         f"({info.get('fingerprint')}), but {source} has {fingerprint}: its ids mean other text")
    return loader, source


def check_vocabulary(vocab: int, ids: tuple[int, int], labels: tuple[int, int], pad_id: int, what: str) -> None:
    """Every id in the shards, and the pad id, must index a row of the model's embedding."""
    low, high = min(ids[0], labels[0], pad_id), max(ids[1], labels[1], pad_id)
    if low < 0 or high >= vocab:
        raise TrainError(f"the vocabulary of {what} has {vocab} entries but the shards use token ids {low}..{high}; "
                         "use a model whose vocabulary holds the shards' tokenizer (or resize its embeddings)")


# ----------------------------------------------------------------------------------------- collator
@dataclass
class ShardCollator:
    """Batches shard rows as they are: right-padded, or concatenated into one row (padding-free).

    Padded: ``input_ids`` padded with ``pad_id``, ``labels`` with ``IGNORE_INDEX``, plus an
    ``attention_mask``. Padding-free: one row, ``position_ids`` restarting per conversation (the
    row's ``position_ids``, else its ``seq_lengths``, else one conversation per row), no
    ``attention_mask``, and the label at each conversation's first position ignored.
    """

    pad_id: int
    padding_free: bool = False
    pad_to_multiple_of: int | None = None
    varlen_kwargs: bool = False  # add cu_seq_lens_*/max_length_* (flash attention's varlen inputs)

    def _width(self, n: int) -> int:
        m = self.pad_to_multiple_of
        return -(-n // m) * m if m else n

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not self.padding_free:
            shape = (len(rows), self._width(max(len(r["input_ids"]) for r in rows)))
            ids, labels = torch.full(shape, self.pad_id), torch.full(shape, IGNORE_INDEX)
            mask = torch.zeros(shape, dtype=torch.long)
            for i, r in enumerate(rows):
                n = len(r["input_ids"])
                ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
            return {"input_ids": ids, "labels": labels, "attention_mask": mask}
        ids = torch.tensor([t for r in rows for t in r["input_ids"]])
        labels = torch.tensor([t for r in rows for t in r["labels"]])
        pos = torch.cat([self._positions(r, torch) for r in rows])
        labels[pos == 0] = IGNORE_INDEX  # never predict a conversation's first token from the one before
        extra = self._width(len(ids)) - len(ids)  # padding: each token its own ignored sequence
        ids = torch.cat([ids, torch.full((extra,), self.pad_id)])
        labels = torch.cat([labels, torch.full((extra,), IGNORE_INDEX)])
        pos = torch.cat([pos, torch.zeros(extra, dtype=torch.long)])
        out = {"input_ids": ids[None], "labels": labels[None], "position_ids": pos[None]}
        if self.varlen_kwargs:
            cu = torch.cat([(pos == 0).nonzero().flatten(), torch.tensor([len(pos)])]).to(torch.int32)
            out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=int(cu.diff().max()))
            out["max_length_k"] = out["max_length_q"]
        return out

    @staticmethod
    def _positions(row: dict[str, Any], torch: Any) -> Any:
        n = len(row["input_ids"])
        if row.get("position_ids") is not None:
            pos = torch.tensor(row["position_ids"], dtype=torch.long)
        elif row.get("seq_lengths") is not None:
            pos = torch.cat([torch.arange(k) for k in row["seq_lengths"]] or [torch.arange(0)])
        else:
            pos = torch.arange(n)
        if len(pos) != n:
            raise ValueError(f"a row has {n} tokens but its position_ids/seq_lengths cover {len(pos)}")
        return pos


# --------------------------------------------------------------------------------------------- runs
def build_trainer(opts: TrainOptions, log: Callable[[str], None] = _log_default) -> PreparedRun:
    """Check settings and data, load the model, build the ``SFTTrainer``; nothing is trained."""
    settings, padding_free_asked = resolve_settings(opts)
    args = build_sft_config(settings)
    init_kwargs = dict(settings.get("model_init_kwargs") or {})
    if opts.model != TINY_SPEC:
        init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    data_dir = Path(opts.data_dir)
    manifest = read_manifest(data_dir)
    audit = check_audit(data_dir, opts.skip_audit)
    ds = load_shards(data_dir)
    packed = bool({"position_ids", "seq_lengths"} & set(ds.column_names))
    if packed and padding_free_asked is False:
        raise TrainError("these shards are packed (position_ids/seq_lengths): they train only padding-free")
    get_tokenizer, tok_source = resolve_tokenizer(opts.model, manifest)
    pad_id = (manifest.get("tokenizer") or {}).get("pad_id")
    if pad_id is None:
        hf = get_tokenizer()
        pad_id = hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id
    ids, label_ids = token_id_range(ds, "input_ids"), token_id_range(ds, "labels")
    try:
        vocab = model_vocab_size(opts.model, bool(init_kwargs.get("trust_remote_code")))
        check_vocabulary(vocab, ids, label_ids, pad_id, f"{opts.model} (config)")
        model = load_model(opts.model, args.seed, init_kwargs)
    except (OSError, ValueError) as exc:  # a missing or malformed model, bad model_init_kwargs
        raise TrainError(f"cannot load the model {opts.model!r}: {exc}") from exc
    out_emb = model.get_output_embeddings()
    vocab = min([model.get_input_embeddings().num_embeddings, *([out_emb.weight.shape[0]] if out_emb is not None else [])])
    check_vocabulary(vocab, ids, label_ids, pad_id, f"{opts.model} (embeddings)")
    attn = str(getattr(model.config, "_attn_implementation", ""))
    collator = ShardCollator(pad_id, packed or bool(padding_free_asked), args.pad_to_multiple_of, "flash" in attn)
    from trl import SFTTrainer

    keep = [c for c in ("input_ids", "labels", "position_ids", "seq_lengths") if c in ds.column_names]
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds.select_columns(keep),
                         processing_class=get_tokenizer(), data_collator=collator)
    totals = manifest.get("totals") or {}
    log(f"data: {len(ds)} rows, {totals.get('tokens', '?')} tokens ({totals.get('trained_tokens', '?')} trained) "
        f"from {data_dir}; audit {audit}")
    log(f"tokenizer: {tok_source}; fingerprint matches the manifest")
    log(f"model: {opts.model}, {sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {vocab}, "
        f"{attn or '?'} attention, {'padding-free' if collator.padding_free else 'padded'} batches")
    return PreparedRun(trainer, manifest, data_dir, Path(opts.output_dir), collator.padding_free, settings)


def loss_history(trainer: Any) -> list[dict]:
    """The logged training steps (step, loss, learning rate, grad norm, ...) from the trainer state."""
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
    result = run.trainer.train()
    save_outputs(run)
    history = loss_history(run.trainer)
    first_last = f", logged loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}" if history else ""
    log(f"trained {result.global_step} steps: mean loss {result.training_loss:.4f}{first_last}")
    log(f"saved model, tokenizer, trainer_state.json, {LOSS_HISTORY_NAME} and {DATA_MANIFEST_NAME} to {run.output_dir}")
    return run
