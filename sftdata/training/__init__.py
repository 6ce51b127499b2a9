"""``sftdata train``: fine-tune a causal LM on prepared shards with TRL's ``SFTTrainer``.

The library lives in :mod:`sftdata.training.launcher` (settings, refusals, collator, ``train``);
:mod:`sftdata.training.command` is the thin click command; :mod:`sftdata.training.tiny_model` builds
``builtin:tiny-llama3`` for CPU runs and tests. Heavy imports (torch, transformers, trl) happen only
when a function needs them, so importing this package is cheap.
"""

from .launcher import (
    DATA_MANIFEST_NAME,
    LOSS_HISTORY_NAME,
    PreparedRun,
    ShardCollator,
    TrainError,
    TrainOptions,
    build_trainer,
    train,
)
from .tiny_model import TINY_SPEC, build_tiny_llama3

__all__ = [
    "DATA_MANIFEST_NAME",
    "LOSS_HISTORY_NAME",
    "TINY_SPEC",
    "PreparedRun",
    "ShardCollator",
    "TrainError",
    "TrainOptions",
    "build_tiny_llama3",
    "build_trainer",
    "train",
]
