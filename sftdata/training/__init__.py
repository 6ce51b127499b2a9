"""``sftdata train``: fine-tune a causal LM on prepared shards with TRL's ``SFTTrainer``.

The library: :mod:`~sftdata.training.settings` (options -> SFTConfig), :mod:`~sftdata.training.checks`
(refusals before step 1), :mod:`~sftdata.training.collator`, :mod:`~sftdata.training.launcher` (``train``);
:mod:`sftdata.training.command` is the thin click command; :mod:`sftdata.training.tiny_model` builds
``builtin:tiny-llama3`` for CPU runs and tests. Batching: :mod:`~sftdata.training.token_batches` (the
sampler), :mod:`~sftdata.training.probe` and :mod:`~sftdata.training.memory` (the ``auto`` probe),
:mod:`~sftdata.training.sizing` (size and accumulation), :mod:`~sftdata.training.plan` (``sftdata plan``).
Heavy imports (torch, transformers, trl) happen only when a function needs them, so importing this
package is cheap.
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
from .plan import make_plan, plan_figures
from .sizing import BatchDecision
from .tiny_model import TINY_SPEC, build_tiny_llama3
from .token_batches import BatchSpec, ShardBatchSampler

__all__ = [
    "BatchDecision",
    "BatchSpec",
    "ShardBatchSampler",
    "make_plan",
    "plan_figures",
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
