"""Where the units of work run: ``local`` (this process, or a process pool) and ``ray``.

An executor only decides *where* a task (``sftdata.process.tasks.ProcessChunk``, ``HoldChunk``...)
runs on each chunk. Chunk planning, ``--resume``, the dedupe plan and the commit stay in
``sftdata.runner``, so every executor produces the same bytes for the same input and settings.
To add one (Slurm, Dask), subclass ``Executor`` in a module here and add it to ``get_executor`` below.
"""

from sftdata.errors import RunError
from sftdata.executors.base import Executor, ExecutorFailure


def get_executor(name: str, workers: int, *, ray_address: str | None = None) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``)."""
    if name == "local":
        from sftdata.executors.local import LocalExecutor

        return LocalExecutor(workers)
    if name == "ray":
        from sftdata.executors.ray import RayExecutor

        return RayExecutor(workers, address=ray_address)
    raise RunError(f"unknown executor {name!r}; expected local or ray")


__all__ = ["Executor", "ExecutorFailure", "get_executor"]
