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

Batches: every run draws its micro-batches from :class:`~sftdata.planning.token_batches.ShardBatchSampler`
(a row count, or ``--batch-tokens``; the longest row first each epoch), sized by
:func:`~sftdata.training.probing.decide_batches` (fixed sizes as given, ``auto`` by the worst-case probe).

Multi-GPU: ``accelerate launch -m sftdata.cli train DIR --model M --output-dir OUT`` (or
``torchrun --nproc-per-node 8 -m sftdata.cli train ...``) runs one process per device;
``--batch-size`` is per device and only rank 0 writes the outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftdata.constants import MANIFEST_NAME
from sftdata.planning.collator import ShardCollator
from sftdata.planning.folder import load_shards, read_manifest
from sftdata.planning.sizing import BatchDecision
from sftdata.planning.token_batches import (
    BatchSpec,
    ShardBatchSampler,
    check_rows_fit,
    dataset_ids,
    dataset_lengths,
)
from sftdata.storage.layout import TRAIN_MARKER_NAME
from sftdata.training.checks import check_audit, check_output_dir, check_vocabulary, resolve_tokenizer, token_id_range
from sftdata.training.dataloader import install_sampler
from sftdata.training.model_check import check_model_folder
from sftdata.training.probing import decide_batches
from sftdata.training.settings import TrainError, TrainOptions, build_sft_config, resolve_settings
from sftdata.training.tiny_model import TINY_SPEC, load_model, model_vocab_size

__all__ = ["DATA_MANIFEST_NAME", "LOSS_HISTORY_NAME", "PreparedRun", "ShardCollator", "TrainError", "TrainOptions",
           "build_trainer", "check_audit", "check_vocabulary", "load_shards", "loss_history", "read_manifest",
           "resolve_settings", "resolve_tokenizer", "save_outputs", "token_id_range", "train"]

DATA_MANIFEST_NAME = TRAIN_MARKER_NAME  # the data's manifest, copied: marks the folder as train's
LOSS_HISTORY_NAME = "loss_history.json"
EVAL_RESULTS_NAME = "eval_results.json"  # the eval split's metrics, when the data is a split run


@dataclass
class PreparedRun:
    """A trainer ready for ``.train()``, and what was learned while checking the data."""

    trainer: Any
    manifest: dict
    data_dir: Path
    output_dir: Path
    padding_free: bool
    settings: dict = field(default_factory=dict)
    decision: BatchDecision | None = None


def _log_default(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- runs
def build_trainer(opts: TrainOptions, log: Callable[[str], None] = _log_default) -> PreparedRun:
    """Check settings and data, load the model, build the ``SFTTrainer``; nothing is trained."""
    settings, padding_free_asked = resolve_settings(opts)
    check_output_dir(Path(opts.output_dir), Path(opts.data_dir))  # before the data is read or a model built
    args = build_sft_config(settings)
    init_kwargs = dict(settings.get("model_init_kwargs") or {})
    if opts.model != TINY_SPEC:
        init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    check_model_folder(opts.model, trust_remote_code=bool(init_kwargs.get("trust_remote_code")),
                       dtype=init_kwargs.get("dtype", init_kwargs.get("torch_dtype")))  # before anything is built
    data_dir, eval_dir = _data_dirs(Path(opts.data_dir))
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
    lengths, row_ids = dataset_lengths(ds), dataset_ids(ds)
    if isinstance(opts.batch_tokens, int):  # a row longer than the budget is refused before the model loads
        check_rows_fit(lengths, row_ids, BatchSpec(tokens=opts.batch_tokens, padding_free=packed or bool(
            padding_free_asked), pad_to_multiple_of=args.pad_to_multiple_of))
    model, vocab = _checked_model(opts.model, args.seed, init_kwargs, ids, label_ids, pad_id)
    attn = str(getattr(model.config, "_attn_implementation", ""))
    collator = ShardCollator(pad_id, packed or bool(padding_free_asked), args.pad_to_multiple_of, "flash" in attn)
    decision = decide_batches(opts, args, settings, model, ds, lengths, collator)
    log(decision.summary())
    world = max(1, args.world_size)
    sampler = ShardBatchSampler(lengths, decision.spec(collator.padding_free, args.pad_to_multiple_of),
                                seed=args.data_seed if args.data_seed is not None else args.seed,
                                rank=args.process_index, world_size=world, ids=row_ids)
    # per_device_train_batch_size only labels the Trainer's logs now: the mean rows per micro-batch.
    rows_hint = decision.size if decision.unit == "rows" else max(1, round(len(ds) / (len(sampler) * world)))
    args = build_sft_config({**settings, "per_device_train_batch_size": rows_hint,
                             "gradient_accumulation_steps": decision.grad_accum})
    from trl import SFTTrainer

    keep = [c for c in ("input_ids", "labels", "position_ids", "seq_lengths") if c in ds.column_names]
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds.select_columns(keep),
                         eval_dataset=load_shards(eval_dir).select_columns(keep) if eval_dir else None,
                         processing_class=get_tokenizer(), data_collator=collator)
    install_sampler(trainer, sampler)
    totals = manifest.get("totals") or {}
    log(f"data: {len(ds)} rows, {totals.get('tokens', '?')} tokens ({totals.get('trained_tokens', '?')} trained) "
        f"from {data_dir}; audit {audit}")
    log(f"tokenizer: {tok_source}; fingerprint matches the manifest")
    log(f"model: {opts.model}, {sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {vocab}, "
        f"{attn or '?'} attention, {'padding-free' if collator.padding_free else 'padded'} batches")
    return PreparedRun(trainer, manifest, data_dir, Path(opts.output_dir), collator.padding_free, settings, decision)


def _data_dirs(data_dir: Path) -> tuple[Path, Path | None]:
    """(train folder, eval folder or None): a split run's folder (``sftdata run`` of a mix with
    ``split.eval``) trains on ``train/`` and evaluates on ``eval/``."""
    from sftdata.mix.splits import split_folders_of

    splits = dict(split_folders_of(str(data_dir)))
    if not splits:
        return data_dir, None
    return Path(splits["train"]), Path(splits["eval"]) if "eval" in splits else None


def _checked_model(spec: str, seed: int, init_kwargs: dict, ids: tuple[int, int], label_ids: tuple[int, int],
                   pad_id: int) -> tuple[Any, int]:
    """The model, with every id of the data inside its vocabulary (by its config, then its embeddings)."""
    try:
        vocab = model_vocab_size(spec, bool(init_kwargs.get("trust_remote_code")))
        check_vocabulary(vocab, ids, label_ids, pad_id, f"{spec} (config)")
        model = load_model(spec, seed, init_kwargs)
    except (OSError, ValueError) as exc:  # a missing or malformed model, bad model_init_kwargs
        raise TrainError(f"cannot load the model {spec!r}: {' '.join(str(exc).split())[:300]}") from exc
    out_emb = model.get_output_embeddings()
    vocab = min([model.get_input_embeddings().num_embeddings, *([out_emb.weight.shape[0]] if out_emb is not None else [])])
    check_vocabulary(vocab, ids, label_ids, pad_id, f"{spec} (embeddings)")
    return model, vocab


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
    if run.trainer.is_world_process_zero():  # the marker first: a folder a failed run leaves is train's
        run.output_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.data_dir / MANIFEST_NAME, run.output_dir / DATA_MANIFEST_NAME)
    result = run.trainer.train()
    save_outputs(run)
    if run.trainer.eval_dataset is not None:  # a split run's eval split: its loss, logged and saved
        metrics = run.trainer.evaluate()
        if run.trainer.is_world_process_zero():
            (run.output_dir / EVAL_RESULTS_NAME).write_text(json.dumps(metrics, indent=1) + "\n")
        log(f"eval loss {metrics['eval_loss']:.4f} over {len(run.trainer.eval_dataset)} eval rows "
            f"({EVAL_RESULTS_NAME})")
    history = loss_history(run.trainer)
    first_last = f", logged loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}" if history else ""
    log(f"trained {result.global_step} steps: mean loss {result.training_loss:.4f}{first_last}")
    log(f"saved model, tokenizer, trainer_state.json, {LOSS_HISTORY_NAME} and {DATA_MANIFEST_NAME} to {run.output_dir}")
    return run
