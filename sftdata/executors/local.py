"""Tasks on this machine: in this process (one worker or one chunk), else on a process pool.

The pool forks (where the platform can) so workers start with the driver's imports and with the
task's per-process state already built (``task.warm()``: the tokenizer's encoder); each worker
asks the kernel to kill it when the driver dies, so an orphan never keeps writing into a folder
that a resumed run now owns. A worker that dies (SIGKILL, the OOM killer) breaks the pool: that
is reported as an ``ExecutorFailure`` at once instead of hanging, and the pool is shut down.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sftdata.executors.base import Executor, ExecutorFailure, Task
from sftdata.stages.read.jsonl import Chunk

_TASK: list[Task] = []  # the task of this worker process, set once by the pool initializer


def _die_with_parent(parent_pid: int) -> None:
    """An orphaned worker must not keep writing into a folder that a resumed run now owns."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown is all we have
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker_init(task: Task, parent_pid: int) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _die_with_parent(parent_pid)
    from sftdata.storage import filesystem

    filesystem.cache_clear()  # a forked worker opens its own S3/GCS client: SDK threads do not survive fork
    _TASK[:] = [task]


def _call(chunk: Chunk) -> Any:
    return _TASK[0](chunk)


class LocalExecutor(Executor):
    name = "local"

    def map(self, task: Task, chunks: Sequence[Chunk]) -> Iterator[Any]:
        if self.workers == 1 or len(chunks) <= 1:
            for chunk in chunks:
                yield task(chunk)
            return
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        warm = getattr(task, "warm", None)
        if warm is not None and ctx.get_start_method() == "fork":
            warm()  # the workers inherit the built encoder instead of each building its own
        pool = ProcessPoolExecutor(min(self.workers, len(chunks)), mp_context=ctx, initializer=_worker_init,
                                   initargs=(task, os.getpid()))
        try:
            # no list of the futures is kept: as_completed lets go of each one it yields, so a
            # result the caller has consumed is freed (the results together grow with the input)
            for fut in as_completed([pool.submit(_call, c) for c in chunks]):
                result = fut.result()
                del fut
                yield result
        except BrokenProcessPool:
            pool.shutdown(cancel_futures=True)
            raise ExecutorFailure("a worker process died unexpectedly (killed by a signal or out of memory)") from None
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        pool.shutdown()
