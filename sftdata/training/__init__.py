"""``sftdata train``: fine-tune a causal LM on prepared shards with TRL's ``SFTTrainer``.

The library: :mod:`~sftdata.training.settings` (options -> SFTConfig), :mod:`~sftdata.training.checks`
(refusals before step 1), :mod:`~sftdata.training.launcher` (``train``), :mod:`~sftdata.training.probing`
(the ``auto`` batch probe of a real model, for ``train`` and ``plan --model``);
:mod:`sftdata.training.command` and :mod:`sftdata.training.plan_command` are the thin click commands;
:mod:`sftdata.training.tiny_model` builds ``builtin:tiny-llama3`` for CPU runs and tests. Batches,
lengths, the collator and memory meters are :mod:`sftdata.planning`'s, used here as data.
Heavy imports (torch, transformers, trl) happen only when a function needs them, so importing this
package is cheap.
"""

from sftdata.training.launcher import (
    DATA_MANIFEST_NAME,
    LOSS_HISTORY_NAME,
    PreparedRun,
    TrainError,
    TrainOptions,
    build_trainer,
    train,
)
from sftdata.training.tiny_model import TINY_SPEC, build_tiny_llama3

__all__ = [
    "DATA_MANIFEST_NAME",
    "LOSS_HISTORY_NAME",
    "TINY_SPEC",
    "PreparedRun",
    "TrainError",
    "TrainOptions",
    "build_tiny_llama3",
    "build_trainer",
    "train",
]
