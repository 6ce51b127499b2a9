"""The tasks of a mix: the first pass (``ScanChunk``: facts of every valid record), the prompt
hashes of a decontamination file (``PromptChunk``) and the main pass (``MixChunk``: one chunk's
routed rows into one split folder).

A mix's chunks belong to sources with their own format and field map, so a task carries the
settings of every source and picks a chunk's by ``chunk.source``; the per-process processors
are ``sftdata.process.chunk``'s.
"""

from __future__ import annotations

import numpy as np

from sftdata.config import Settings
from sftdata.mix.decide import Drop, Route
from sftdata.mix.facts import ChunkFacts, FactsBuilder, Needs
from sftdata.mix.routed import mix_staged
from sftdata.mix.staged import ENCODED, FAILED, RowsWriter, Staged, read_rows, rows_path, settings_key
from sftdata.process.chunk import ChunkResult, clean_chunk_leftovers
from sftdata.process.identity import chunk_digest
from sftdata.process.record import (
    RUN_FAULTS,
    BlankCounter,
    RecordProcessor,
    conversation_hashes,
    processor_for,
    validated,
)
from sftdata.process.tasks import ChunkTask
from sftdata.stages.read.jsonl import Chunk
from sftdata.stages.records import Conversation


class _SourceTask(ChunkTask):
    """A task over chunks of several sources: ``settings`` is the shared one, ``sources`` each one's."""

    def __init__(self, settings: Settings, sources: dict[str, Settings]) -> None:
        super().__init__(settings)
        self.sources = sources

    def proc_of(self, chunk: Chunk) -> tuple[Settings, RecordProcessor]:
        own = self.sources.get(chunk.source, self.settings)
        return own, processor_for(own)

    def warm(self) -> None:
        """The BPE engine, built once in the driver before a pool forks (the workers share its pages)
        instead of once per worker: what ``ProcessChunk.warm`` does for a plain run."""
        for own in self.sources.values():
            processor_for(own).encoder.tok.encode_text("")


class ScanChunk(_SourceTask):
    """First pass: every record processed whole (parse, adapt, validate, render, encode), its
    outcome staged in ``location``'s work dir (``sftdata.mix.staged``), and the facts of each record
    that would be written returned as columns (``sftdata.mix.facts``).

    A record whose encoding fails is a fact all the same unless its facts needed the encoding (the
    recipe needs token counts, or ``truncation: drop`` with more characters than ``max_length``: a
    token holds at least one), so the valid count does not depend on the recipe's other settings.

    The facts are read from the staged rows (``facts_of``), so a chunk whose rows are already staged
    (a complete file naming the chunk's input digest and the source's settings: an earlier, killed
    attempt's) gives the same facts without being processed again: a resumed run redoes only the
    chunks the killed one had not staged."""

    def __init__(self, settings: Settings, sources: dict[str, Settings], needs: Needs, location: str) -> None:
        super().__init__(settings, sources)
        self.needs, self.location = needs, location

    def __call__(self, chunk: Chunk) -> ChunkFacts:
        settings, proc = self.proc_of(chunk)
        digest, key = chunk_digest(chunk), settings_key(settings, self.needs.drops)
        staged = read_rows(self.location, chunk.index, digest, key)
        if staged is None:  # else staged by an earlier attempt (a killed run): nothing processed again
            staged = stage(chunk, settings, proc, self.needs, self.location, digest)
        return facts_of(staged, settings, self.needs, chunk.source).build(chunk.index, digest)


def counted(needs: Needs, settings: Settings, chars: int) -> bool:
    """Whether a record's facts need its encoding (the count, or whether encoding keeps it: a token
    holds at least one character)."""
    return needs.tokens or (settings.truncation == "drop" and chars > settings.max_length)


def facts_of(staged: Staged, settings: Settings, needs: Needs, source: str) -> FactsBuilder:
    """The facts of a chunk's staged rows: each encoded row, and each row whose encoding failed
    where its facts did not need the encoding (``counted``), in input order."""
    chars = staged.numbers("chars")
    failed = [i for i in np.flatnonzero((staged.kind == FAILED) & (chars >= 0)).tolist()
              if not counted(needs, settings, int(chars[i]))]  # the few rows a failure stopped
    rows = np.union1d(np.flatnonzero(staged.kind == ENCODED), np.array(failed, dtype=np.int64))
    tokens = np.where(staged.kind == ENCODED, np.diff(staged.offsets("input_ids")), -1)
    facts = FactsBuilder(needs, source)
    ids, ch, ph = staged.strings("id"), staged.strings("content_hash"), staged.strings("prompt_hash")
    if len(rows) == len(staged.kind):
        facts.extend(staged.line, ids, ch, ph, tokens)
    else:
        pick = rows.tolist()
        facts.extend(staged.line[rows], [ids[i] for i in pick], [ch[i] for i in pick], [ph[i] for i in pick],
                     tokens[rows])
    return facts


def stage(chunk: Chunk, settings: Settings, proc: RecordProcessor, needs: Needs, location: str,
          digest: str) -> Staged:
    """Process every record of ``chunk`` whole and stage its outcome in ``location``'s work dir
    (``rows_path``); returns the staged rows."""
    rows, blanks = RowsWriter(needs.drops), BlankCounter()
    for line, raw, _rid, conv in validated(chunk, settings, proc, blanks):
        if not isinstance(conv, Conversation):
            rows.rejected(line, conv)
            continue
        pieces = None
        try:
            pieces = conv.pieces if conv.pieces is not None else proc.renderer.render(conv)
            enc = proc.encoder.encode(pieces)
            hashes = conversation_hashes(conv)
        except RUN_FAULTS:
            raise
        except Exception as exc:  # noqa: BLE001 - quarantined by the main pass if it takes the record
            chars = sum([len(v) for _, v in pieces]) if pieces is not None else -1
            fact = chars >= 0 and not counted(needs, settings, chars)  # a fact all the same
            rows.failed(line, raw, conv, exc, chunk.name, chars, conversation_hashes(conv) if fact else ("", ""))
            continue
        rows.encoded(line, raw, conv, enc, hashes)
    return rows.write(rows_path(location, chunk.index), digest, settings_key(settings, needs.drops), blanks.value)


class PromptChunk(_SourceTask):
    """The prompt hashes of a decontamination file's valid records (and how many were not valid)."""

    def warm(self) -> None:
        """Nothing: validating and hashing never encode."""

    def __call__(self, chunk: Chunk) -> tuple[int, list[str], int]:
        settings, proc = self.proc_of(chunk)
        hashes, invalid = [], 0
        for _line, _raw, _rid, conv in validated(chunk, settings, proc):
            if isinstance(conv, Conversation):
                hashes.append(conversation_hashes(conv)[1])
            else:
                invalid += 1
        return chunk.index, hashes, invalid


class MixChunk(_SourceTask):
    """Main pass: one chunk's routed records as rows of their split's folder (copies ``<id>#r2``...),
    with their source; returns split -> ``ChunkResult``, its row lists packed where the chunk ran
    (``ChunkResult.compact``: the driver, which shares the cores with the workers, sorts no row).

    ``locations``: split -> folder (the first one keeps the quarantine: ``train``, or the only
    folder); ``routes``: chunk -> ``Route`` (lines, copies, split); ``drops``: chunk -> line -> ``Drop``;
    ``digests``: chunk -> the digest of the input bytes its rows were staged from (the first pass
    hashed them; without one, the input is hashed again); ``needs``: what the first pass staged
    with (``needs.drops``: the records' lines are kept, there are drops to quarantine). Rows are
    always written from staged rows: a chunk whose staged file is absent or not trusted (torn, other
    bytes or settings, staged on another machine of a Ray cluster) is staged again first, as the
    first pass does. A record neither routed nor dropped is not taken: counted by the driver, not
    written."""

    def __init__(self, settings: Settings, sources: dict[str, Settings], locations: dict[str, str],
                 routes: dict[int, Route], drops: dict[int, dict[int, Drop]],
                 run_ids: dict[str, str], *, needs: Needs, sync: bool = True,
                 digests: dict[int, str] | None = None) -> None:
        super().__init__(settings, sources)
        self.locations, self.routes, self.drops, self.digests = locations, routes, drops, digests or {}
        self.needs, self.run_ids, self.sync = needs, run_ids, sync

    def __call__(self, chunk: Chunk) -> dict[str, ChunkResult]:
        settings, proc = self.proc_of(chunk)
        location = next(iter(self.locations.values()))  # where the first pass staged
        key = settings_key(settings, self.needs.drops)
        digest = self.digests.get(chunk.index) or chunk_digest(chunk)  # the first pass read these bytes
        staged = read_rows(location, chunk.index, digest, key)
        if staged is None:
            digest = chunk_digest(chunk)
            staged = stage(chunk, settings, proc, self.needs, location, digest)
        results = mix_staged(chunk, digest, staged, settings, self.locations, self.routes.get(chunk.index),
                             self.drops.get(chunk.index, {}), self.run_ids, self.sync)
        return {name: r.compact() for name, r in results.items()}

    def prepare(self, chunk: Chunk) -> None:
        for location in self.locations.values():
            clean_chunk_leftovers(location, chunk.index)

    def warm(self) -> None:
        """Nothing: rows are written from staged rows, never encoded (a chunk staged again here, the
        rare case, builds its own encoder)."""
