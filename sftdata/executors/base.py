"""The one executor interface: ``map(task, chunks)`` yields each chunk's result as it completes.

Why an interface this small (after datatrove's ``PipelineExecutor``): the tasks are picklable
callables that write their own files and return small results, so an executor has exactly one
decision to make, *where* each call runs, and one duty: report a unit that could not run as an
``ExecutorFailure`` naming the chunk, never hang and never return a partial result as a success.
What is committed stays committed; the runner turns the failure into the resume hint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sftdata.errors import RunError
from sftdata.stages.read.jsonl import Chunk

Task = Callable[[Chunk], Any]


class ExecutorFailure(RunError):
    """A unit of work that did not complete: a dead worker, a lost node, an exception in a task."""

    def __init__(self, why: str, chunk: Chunk | None = None, place: str = "") -> None:
        where = f"chunk {chunk.index} ({chunk.name}, bytes {chunk.start}-{chunk.end}) failed" if chunk else ""
        where += f" {place}" if where and place else ""
        super().__init__(f"{where}: {why}" if where else why)
        self.chunk = chunk
        self.why = why


class Executor(ABC):
    """Runs a task over chunks on ``workers`` parallel slots."""

    name = "base"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)

    @abstractmethod
    def map(self, task: Task, chunks: Sequence[Chunk]) -> Iterator[Any]:
        """Yield ``task(chunk)`` for every chunk, in completion order (any order).

        Raises ``ExecutorFailure`` for a chunk that could not complete; results already yielded
        stay valid (their files are committed).
        """
