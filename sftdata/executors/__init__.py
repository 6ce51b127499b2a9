"""Where the units of work run: ``local`` (this process, or a process pool) and ``ray``.

An executor only decides *where* a task (``sftdata.process.chunk.ProcessChunk`` or ``HashChunk``)
runs on each chunk. Chunk planning, ``--resume``, the dedupe plan and the commit stay in
``sftdata.runner``, so every executor produces the same bytes for the same input and settings.
To add one (Slurm, Dask), subclass ``Executor`` in a module here and add it to ``get_executor``.
"""

from sftdata.executors.base import Executor, ExecutorFailure, get_executor

__all__ = ["Executor", "ExecutorFailure", "get_executor"]
