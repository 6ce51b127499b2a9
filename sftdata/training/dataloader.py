"""The training DataLoader over :class:`~sftdata.planning.token_batches.ShardBatchSampler`.

Why: the Trainer builds its loader from a fixed ``per_device_train_batch_size``; token-budget
batches vary in rows, and even row-count batches should start each epoch with the longest row. So
the trainer's ``get_train_dataloader`` is replaced by one that passes our rank-aware batch sampler
as ``batch_sampler``. ``accelerate`` wraps a batch sampler in a ``BatchSamplerShard`` that would
shard it a second time; as transformers does for its own rank-aware ``BatchRebalanceSampler``, the
wrapper is made a pass-through. The Trainer calls ``set_epoch`` on the sampler it finds under that
wrapper, so each epoch is reshuffled.
"""

from __future__ import annotations

import types
from typing import Any

from sftdata.planning.token_batches import ShardBatchSampler


def sampled_dataloader(trainer: Any, sampler: ShardBatchSampler) -> Any:
    """A prepared DataLoader that yields this rank's micro-batches from ``sampler``."""
    import torch
    from torch.utils.data import DataLoader

    args = trainer.args
    pin = bool(args.dataloader_pin_memory) and torch.cuda.is_available()  # pinning needs an accelerator
    params: dict[str, Any] = {"batch_sampler": sampler, "collate_fn": trainer.data_collator,
                              "num_workers": args.dataloader_num_workers, "pin_memory": pin}
    if args.dataloader_num_workers > 0:
        params.update(persistent_workers=args.dataloader_persistent_workers,
                      prefetch_factor=args.dataloader_prefetch_factor)
    loader = trainer.accelerator.prepare(DataLoader(trainer.train_dataset, **params))
    shard = getattr(loader, "batch_sampler", None)
    if shard is not None and getattr(shard, "batch_sampler", None) is sampler:
        shard.num_processes, shard.process_index = 1, 0  # the sampler already picks this rank's batches
    return loader


def install_sampler(trainer: Any, sampler: ShardBatchSampler) -> None:
    """Make ``trainer.train()`` draw its micro-batches from ``sampler``."""
    trainer.get_train_dataloader = types.MethodType(lambda self: sampled_dataloader(self, sampler), trainer)
    trainer.batch_sampler = sampler
