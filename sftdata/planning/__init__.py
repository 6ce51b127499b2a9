"""Batch planning: how prepared rows become batches, and what a batch costs.

:mod:`~sftdata.planning.token_batches` (row lengths, ``BatchSpec``, the token-budget sampler),
:mod:`~sftdata.planning.collator` (rows to tensors: padded or padding-free), :mod:`~sftdata.planning.memory`
(memory meters), :mod:`~sftdata.planning.probe` (the worst-case batch search), :mod:`~sftdata.planning.sizing`
(size and accumulation decisions), :mod:`~sftdata.planning.plan` (``sftdata plan``'s figures, used as data
by the HTML report) and :mod:`~sftdata.planning.folder` (a prepared folder's manifest and shards).
Nothing here imports :mod:`sftdata.training`; training uses these as data.
"""
