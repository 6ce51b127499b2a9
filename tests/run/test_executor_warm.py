"""The local pool forks after ``task.warm()``: workers inherit what the driver built (the encoder)
instead of each building its own; the serial path (one chunk, one worker) never calls it."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from sftdata.executors.local import LocalExecutor
from sftdata.stages.read.jsonl import Chunk


class _Task:
    def __init__(self) -> None:
        self.built_in: int | None = None

    def warm(self) -> None:
        self.built_in = os.getpid()

    def __call__(self, chunk: Chunk) -> tuple[int, int | None, int]:
        return chunk.index, self.built_in, os.getpid()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="warm() applies to fork pools only")
def test_pool_workers_inherit_the_warmed_state(tmp_path) -> None:
    chunks = [Chunk(i, str(tmp_path / "x.jsonl"), "x.jsonl", 0, 0, 1) for i in range(4)]
    results = sorted(LocalExecutor(2).map(_Task(), chunks))
    assert [r[0] for r in results] == [0, 1, 2, 3]
    assert all(r[1] == os.getpid() for r in results)  # built once, here, before the fork
    assert all(r[2] != os.getpid() for r in results)  # and used in the workers


def test_serial_path_does_not_need_warm(tmp_path) -> None:
    chunks = [Chunk(0, str(tmp_path / "x.jsonl"), "x.jsonl", 0, 0, 1)]
    assert list(LocalExecutor(2).map(_Task(), chunks)) == [(0, None, os.getpid())]
