"""The tasks of a mix: the first pass (``ScanChunk``: facts of every valid record), the prompt
hashes of a decontamination file (``PromptChunk``) and the main pass (``MixChunk``: one chunk's
routed rows into one split folder).

A mix's chunks belong to sources with their own format and field map, so a task carries the
settings of every source and picks a chunk's by ``chunk.source``; the per-process processors
are ``sftdata.process.chunk``'s.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np

from sftdata.config import Settings
from sftdata.faults import fault_point
from sftdata.mix.decide import Drop, Route
from sftdata.mix.facts import ChunkFacts, FactsBuilder, Needs
from sftdata.mix.routed import _drop, _writers, commit_chunk, mix_staged
from sftdata.mix.staged import ENCODED, FAILED, RowsWriter, Staged, read_rows, rows_path, settings_key
from sftdata.process.chunk import ChunkResult, ChunkTask, _processor, _Quarantine, clean_chunk_leftovers
from sftdata.process.identity import chunk_digest
from sftdata.process.record import RUN_FAULTS, BlankCounter, RecordProcessor, conversation_hashes, validated
from sftdata.stages.adapt.keys import count_names
from sftdata.stages.read.jsonl import Chunk
from sftdata.stages.records import Conversation, Rejection
from sftdata.stages.write.arrow import ShardWriter
from sftdata.storage import Folder


class _SourceTask(ChunkTask):
    """A task over chunks of several sources: ``settings`` is the shared one, ``sources`` each one's."""

    def __init__(self, settings: Settings, sources: dict[str, Settings]) -> None:
        super().__init__(settings)
        self.sources = sources

    def proc_of(self, chunk: Chunk) -> tuple[Settings, RecordProcessor]:
        own = self.sources.get(chunk.source, self.settings)
        return own, _processor(own)

    def warm(self) -> None:
        """The BPE engine, built once in the driver before a pool forks (the workers share its pages)
        instead of once per worker: what ``ProcessChunk.warm`` does for a plain run."""
        for own in self.sources.values():
            _processor(own).encoder.tok.encode_text("")


class ScanChunk(_SourceTask):
    """First pass: every record processed whole (parse, adapt, validate, render, encode), its
    outcome staged in ``location``'s work dir (``sftdata.mix.staged``), and the facts of each record
    that would be written returned as columns (``sftdata.mix.facts``).

    A record whose encoding fails is a fact all the same unless its facts needed the encoding (the
    recipe needs token counts, or ``truncation: drop`` with more characters than ``max_length``: a
    token holds at least one), so the valid count does not depend on the recipe's other settings.

    A chunk whose rows are already staged (a complete file naming the chunk's input digest and the
    source's settings: an earlier, killed attempt's) is not processed again: its facts are read back
    from the staged rows, so a resumed run redoes only the chunks the killed one had not staged."""

    def __init__(self, settings: Settings, sources: dict[str, Settings], needs: Needs, location: str) -> None:
        super().__init__(settings, sources)
        self.needs, self.location = needs, location

    def __call__(self, chunk: Chunk) -> ChunkFacts:
        settings, proc = self.proc_of(chunk)
        digest, key = chunk_digest(chunk), settings_key(settings, self.needs.drops)
        facts = FactsBuilder(self.needs, chunk.source)
        staged = read_rows(self.location, chunk.index, digest, key)
        if staged is not None:  # staged by an earlier attempt (a killed run): its facts, nothing processed
            self._facts_of(staged, settings, facts)
        else:
            self._process(chunk, settings, proc, facts, digest, key)
        return facts.build(chunk.index, digest)

    def _process(self, chunk: Chunk, settings: Settings, proc: RecordProcessor, facts: FactsBuilder, digest: str,
                 key: str) -> None:
        rows, blanks = RowsWriter(self.needs.drops), BlankCounter()
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
                fact = chars >= 0 and not self._counted(settings, chars)  # a fact all the same
                hashes = conversation_hashes(conv) if fact else ("", "")
                rows.failed(line, raw, conv, exc, chunk.name, chars, hashes)
                if fact:
                    facts.add(line, conv.id, *hashes, -1)
                continue
            rows.encoded(line, raw, conv, enc, hashes)
            facts.add(line, conv.id, *hashes, len(enc.input_ids))
        rows.write(rows_path(self.location, chunk.index), digest, key, blanks.value)

    def _facts_of(self, staged: Staged, settings: Settings, facts: FactsBuilder) -> None:
        """The facts ``_process`` gave when it staged these rows."""
        ids, ch, ph = staged.strings("id"), staged.strings("content_hash"), staged.strings("prompt_hash")
        tokens, chars = np.diff(staged.offsets("input_ids")), staged.numbers("chars")
        for i in np.flatnonzero((staged.kind == ENCODED) | ((staged.kind == FAILED) & (chars >= 0))).tolist():
            if staged.kind[i] == ENCODED:
                facts.add(int(staged.line[i]), ids[i], ch[i], ph[i], int(tokens[i]))
            elif not self._counted(settings, int(chars[i])):
                facts.add(int(staged.line[i]), ids[i], ch[i], ph[i], -1)

    def _counted(self, settings: Settings, chars: int) -> bool:
        """Whether a record's facts need its encoding (the count, or whether encoding keeps it: a
        token holds at least one character)."""
        return self.needs.tokens or (settings.truncation == "drop" and chars > settings.max_length)


class PromptChunk(_SourceTask):
    """The prompt hashes of a decontamination file's valid records (and how many were not valid)."""

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
    with their source; returns split -> ``ChunkResult``.

    ``locations``: split -> folder (the first one keeps the quarantine: ``train``, or the only
    folder); ``routes``: chunk -> ``Route`` (lines, copies, split); ``drops``: chunk -> line -> ``Drop``;
    ``digests``: chunk -> the digest of the input bytes its rows were staged from (the first pass
    hashed them; without one, the input is hashed again); ``raw``: the staged rows must keep the
    records' lines (there are drops to quarantine). A record neither routed nor dropped is not
    taken: counted by the driver, not written."""

    def __init__(self, settings: Settings, sources: dict[str, Settings], locations: dict[str, str],
                 routes: dict[int, Route], drops: dict[int, dict[int, Drop]],
                 run_ids: dict[str, str], *, sync: bool = True, digests: dict[int, str] | None = None,
                 raw: bool = True) -> None:
        super().__init__(settings, sources)
        self.locations, self.routes, self.drops, self.digests = locations, routes, drops, digests or {}
        self.raw = raw
        self.run_ids, self.sync = run_ids, sync

    def __call__(self, chunk: Chunk) -> dict[str, ChunkResult]:
        settings, proc = self.proc_of(chunk)
        route, drops = self.routes.get(chunk.index), self.drops.get(chunk.index, {})
        digest = self.digests.get(chunk.index) or chunk_digest(chunk)  # the first pass read these bytes
        staged = read_rows(next(iter(self.locations.values())), chunk.index, digest,
                           settings_key(settings, self.raw))
        if staged is not None:
            return mix_staged(chunk, digest, staged, settings, self.locations, route, drops, self.run_ids,
                              self.sync)
        routes = route.as_dict() if route is not None else {}
        return mix_chunk(chunk, settings, proc, self.locations, routes, drops, self.run_ids, self.sync)

    def prepare(self, chunk: Chunk) -> None:
        for location in self.locations.values():
            clean_chunk_leftovers(location, chunk.index)


def mix_chunk(chunk: Chunk, settings: Settings, proc: RecordProcessor, locations: dict[str, str],
              routes: dict[int, tuple[str, int]], drops: dict[int, Drop], run_ids: dict[str, str],
              sync: bool = True) -> dict[str, ChunkResult]:
    """One chunk into every split folder, committed like ``process_chunk`` (done-markers last)."""
    digest = chunk_digest(chunk)
    first = next(iter(locations))
    results = {name: ChunkResult(chunk.index, run_id=run_ids[name], input_digest=digest) for name in locations}
    quarantine = _Quarantine(chunk, results[first])
    blanks = BlankCounter()
    with ExitStack() as stack:
        writers = _writers(stack, chunk, settings, locations, sync)
        for line, raw, _rid, outcome in validated(chunk, settings, proc, blanks):
            if isinstance(outcome, Rejection):
                results[first].records_read += 1
                quarantine.add(outcome)
            elif line in drops:
                _drop(results[first], quarantine, drops[line], outcome.id, line, raw)
            elif line in routes:
                split, copies = routes[line]
                _write(results[split], writers[split], proc, outcome, copies, chunk.source,
                       (results[first], quarantine), line, raw)
        for name, writer in writers.items():
            results[name].shards = writer.finish()
    results[first].blank_lines = blanks.value
    fault_point("worker_chunk")
    for name, location in locations.items():
        commit_chunk(Folder(location), results[name], quarantine.to_bytes() if name == first else b"", sync)
    return results


def _write(result: ChunkResult, writer: ShardWriter, proc: RecordProcessor, conv: Conversation, copies: int,
           source: str, rejects: tuple[ChunkResult, _Quarantine], line: int, raw: bytes) -> None:
    """``copies`` rows of one record: the first with its id, the others ``<id>#r2``, ``<id>#r3``..."""
    if conv.unknown_keys:
        count_names(result.unknown_keys, conv.unknown_keys)
    try:
        enc = proc.encode(conv)
        h, ph = conversation_hashes(conv)
    except RUN_FAULTS:
        raise
    except Exception as exc:  # noqa: BLE001 - the first pass skipped it too; keep it with its reason
        rejects[0].records_read += 1
        rejects[1].add_exc(exc, "label", line, conv.id, raw)
        return
    for k in range(1, copies + 1):
        rid = conv.id if k == 1 else f"{conv.id}#r{k}"
        writer.add(rid, enc.input_ids, enc.labels, h, ph, source=source)
        result.records_read += 1
        result.records_written += 1
        result.tokens += len(enc.input_ids)
        result.trained_tokens += enc.trained
        result.special_text_records += conv.has_special_text
        if k == 1:  # copies are not duplicates (the manifest's list of those)
            result.hashes.append((h, rid))
        if enc.truncated:
            result.truncated_ids.append(rid)
