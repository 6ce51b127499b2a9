"""The picklable tasks executors run over chunks, one processor per process: the main pass
(``ProcessChunk``) and the first pass of ``dedupe: exact`` (``RenderChunk``: the main pass then
writes each chunk from what it rendered, ``sftdata.process.rendered``). An executor decides only
*where* a task runs (``sftdata.executors``); *what* it does to a chunk is ``sftdata.process.chunk``'s.
"""

from __future__ import annotations

from typing import Any

from sftdata.config import Settings
from sftdata.process.chunk import ChunkResult, clean_chunk_leftovers, hash_chunk, process_chunk
from sftdata.process.dedupe import hash_run
from sftdata.process.identity import chunk_digest
from sftdata.process.record import RecordProcessor, processor_for
from sftdata.process.rendered import Rendered, render_chunk
from sftdata.stages.read.jsonl import Chunk
from sftdata.storage import Folder, work_dir


class ChunkTask:
    """Base of the tasks: settings travel once per worker; ``processor`` is per process."""

    def __init__(self, settings: Settings, processor: RecordProcessor | None = None) -> None:
        self.settings = settings
        self._proc = processor  # the driver's, for the serial path; never pickled

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_proc"] = None
        return state

    @property
    def processor(self) -> RecordProcessor:
        if self._proc is None:
            self._proc = processor_for(self.settings)
        return self._proc

    def prepare(self, chunk: Chunk) -> None:
        """Undo what an earlier, dead attempt of ``chunk`` may have left behind; executors that
        retry a unit (Ray) call it before every attempt."""

    def warm(self) -> None:
        """Build what every record of the task needs, once, in this process; a pool that forks
        after this hands it to every worker (nothing by default: hashing never loads the tokenizer)."""


class ProcessChunk(ChunkTask):
    """The main pass: a chunk to committed shards; returns its ``ChunkResult``.

    ``sync``: fsync each chunk's files before its result is returned (the default, for executors
    whose workers may be on other machines); ``False`` where the runner's commit, on the same
    machine, syncs them all at once. ``drops``: per chunk index, the lines ``dedupe: exact`` drops (a
    dict, or ``process.dedupe.DropFiles``: anything with ``get(index)``). ``attempt``: the
    ``RenderChunk`` pass whose rendered records a chunk is written from, where they are on this
    machine (else from its input)."""

    def __init__(self, settings: Settings, location: str, drops: Any = None,
                 processor: RecordProcessor | None = None, run_id: str = "", *, sync: bool = True,
                 attempt: str = "") -> None:
        super().__init__(settings, processor)
        self.location = location
        self.drops = drops or {}
        self.run_id = run_id
        self.sync = sync
        self.attempt = attempt

    def __call__(self, chunk: Chunk) -> ChunkResult:
        staging = Folder(self.location).staging()
        rendered = Rendered.open(staging, chunk, self.attempt) if self.attempt else None
        result = process_chunk(chunk, self.settings, self.location, self.processor, self.drops.get(chunk.index),
                               self.run_id, self.sync, rendered)
        if rendered is not None:
            rendered.remove()
        return result.compact()

    def prepare(self, chunk: Chunk) -> None:
        clean_chunk_leftovers(self.location, chunk.index)

    def warm(self) -> None:
        # the BPE engine (splintr's merge tables over 128k ranks): built once in the driver, not once
        # per worker (the forked workers share its pages)
        self.processor.encoder.tok.encode_text("")


class RenderChunk(ChunkTask):
    """The first pass of ``dedupe: exact``: a pending chunk read, validated, hashed and rendered,
    kept for its main pass (``process.rendered``); a chunk a resumed run already has (``done``) is
    only hashed. Returns (chunk index, the chunk's run: ``process.dedupe.hash_run`` bytes)."""

    def __init__(self, settings: Settings, location: str, processor: RecordProcessor | None = None, *,
                 attempt: str, done: frozenset[int] = frozenset()) -> None:
        super().__init__(settings, processor)
        self.location, self.attempt, self.done = location, attempt, done

    def __call__(self, chunk: Chunk) -> tuple[int, bytes]:
        if chunk.index in self.done:
            return chunk.index, hash_run(hash_chunk(chunk, self.settings, self.processor))
        folder = Folder(self.location)
        work_dir(folder)  # a Ray node's own staging folder may not have it yet
        staging = folder.staging()
        return chunk.index, hash_run(render_chunk(chunk, self.processor, staging, self.attempt, chunk_digest(chunk)))
