"""The batch probe of a real model: ``train --batch-size/--batch-tokens auto`` and ``plan --model``.

The planning package (``sftdata.planning``) knows batches, lengths and memory meters; this module
brings the model and the trainer's settings to it: fixed sizes as given, ``auto`` by trying the
worst-case batches on the device.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sftdata.errors import TrainError
from sftdata.planning.collator import ShardCollator
from sftdata.planning.folder import load_shards, read_manifest
from sftdata.planning.plan import Plan
from sftdata.planning.probe import search_space
from sftdata.planning.sizing import BatchDecision, fixed_decision, longest_rows, probe_decision, space_longest
from sftdata.planning.token_batches import dataset_lengths
from sftdata.training.checks import check_vocabulary, token_id_range
from sftdata.training.model_check import check_model_folder
from sftdata.training.settings import TrainOptions, build_sft_config, resolve_settings, sft_fields
from sftdata.training.tiny_model import load_model, model_vocab_size


def decide_batches(opts: TrainOptions, args: Any, settings: dict[str, Any], model: Any, ds: Any,
                   lengths: Sequence[int], collator: ShardCollator) -> BatchDecision:
    """The batch decision for ``sftdata train``: fixed sizes as given, ``auto`` by probing ``model``."""
    world = max(1, int(args.world_size))
    given_accum = settings.get("gradient_accumulation_steps")
    if opts.batch_tokens is None and opts.batch_size != "auto":
        if opts.global_batch_size is None:
            return fixed_decision("rows", args.per_device_train_batch_size, None, world,
                                  args.gradient_accumulation_steps, space_longest(lengths, collator))
        return fixed_decision("rows", args.per_device_train_batch_size, opts.global_batch_size, world, given_accum,
                              space_longest(lengths, collator))
    if isinstance(opts.batch_tokens, int):
        return fixed_decision("tokens", opts.batch_tokens, opts.global_batch_tokens, world, given_accum)
    if opts.batch_tokens == "auto":
        unit, requested = "tokens", opts.global_batch_tokens
    else:  # --batch-size auto keeps the effective batch the settings give (or --global-batch-size)
        unit, requested = "rows", opts.global_batch_size
        if requested is None:
            base = settings.get("per_device_train_batch_size") or sft_fields()["per_device_train_batch_size"].default
            requested, given_accum = int(base) * int(given_accum or 1) * world, None
    space = search_space(unit, lengths, collator.padding_free, collator.pad_to_multiple_of,
                         None if requested is None else -(-requested // world))
    rows = longest_rows(ds, lengths, unit, collator.padding_free, space.k_max, space.size(space.k_max))
    return probe_decision(unit, model, args, lengths, rows, collator, requested=requested, grad_accum=given_accum,
                          memory_limit=opts.memory_limit, margin=opts.memory_margin)


def probe_plan(plan: Plan, model_spec: str, device: str, *, unit: str = "rows", memory_limit: int | None = None,
               margin: float = 0.10, bf16: bool = False, pad_to_multiple_of: int | None = None,
               seed: int = 42) -> Plan:
    """``plan`` with the worst-case probe of ``model_spec`` on ``device`` run once (no cap on the size)."""
    import torch

    folder = Path(plan.folder)
    manifest, ds = read_manifest(folder), load_shards(folder)
    pad_id = (manifest.get("tokenizer") or {}).get("pad_id")
    if pad_id is None:
        raise TrainError(f"{folder}/manifest.json names no pad id; the probe needs one to batch rows")
    check_model_folder(model_spec)  # before anything is built: a hostile or oversized config, pickled weights
    try:
        vocab = model_vocab_size(model_spec)
    except (OSError, ValueError) as exc:  # a missing or malformed model
        raise TrainError(f"cannot load the model {model_spec!r}: {' '.join(str(exc).split())[:300]}") from None
    check_vocabulary(vocab, token_id_range(ds, "input_ids"), token_id_range(ds, "labels"), pad_id, model_spec)
    with tempfile.TemporaryDirectory() as tmp:
        settings, _ = resolve_settings(TrainOptions(data_dir=folder, model=model_spec, output_dir=Path(tmp), bf16=bf16,
                                                    overrides=[f"use_cpu={str(device == 'cpu').lower()}"]))
        args = build_sft_config(settings)
    try:
        model = load_model(model_spec, seed, {})
    except (OSError, ValueError) as exc:
        raise TrainError(f"cannot load the model {model_spec!r}: {exc}") from exc
    lengths = dataset_lengths(ds)
    collator = ShardCollator(pad_id, plan.padding_free, pad_to_multiple_of)
    space = search_space(unit, lengths, plan.padding_free, pad_to_multiple_of)
    rows = longest_rows(ds, lengths, unit, plan.padding_free, space.k_max, space.size(space.k_max))
    decision = probe_decision(unit, model, args, lengths, rows, collator, requested=None, grad_accum=None,
                              memory_limit=memory_limit, margin=margin, device=torch.device(device))
    del model
    return Plan(**{**plan.__dict__, "probe": decision})
