"""``sftdata train``: fine-tune a causal LM on prepared shards with TRL's ``SFTTrainer``.

The library: :mod:`~sftdata.training.settings` (options -> SFTConfig), :mod:`~sftdata.training.checks`
(refusals before step 1), :mod:`~sftdata.training.launcher` (``train``), :mod:`~sftdata.training.probing`
(the ``auto`` batch probe of a real model, for ``train`` and ``plan --model``);
:mod:`sftdata.training.command` and :mod:`sftdata.training.plan_command` are the thin click commands;
:mod:`sftdata.training.tiny_model` builds ``builtin:tiny-llama3`` for CPU runs and tests. Batches,
lengths, the collator and memory meters are :mod:`sftdata.planning`'s, used here as data.
The package exports nothing itself: import from the module that defines a name (``launcher`` for
``train``, ``build_trainer``, ``TrainOptions``; ``tiny_model`` for ``TINY_SPEC``).
"""
