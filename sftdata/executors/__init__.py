"""Executors other than the built-in process pool of ``sftdata.runner``.

An executor only decides *where* ``sftdata.stages.process_chunk`` runs. Chunk planning, the
commit protocol (shards, quarantine part, done-marker), ``--resume`` and the final manifest stay
in ``sftdata.runner``, so every executor produces the same bytes for the same input and settings.

Each executor lives in its own module and imports its framework lazily, so ``import sftdata``
never needs Ray (or any other optional dependency) installed:

- ``sftdata.executors.ray``: chunks as Ray tasks, on a local instance or a running cluster
  (``pip install 'sftdata[ray]'``).
"""
