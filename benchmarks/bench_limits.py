"""Contenders (L) and (LS), the limits, and the per-stage profile of one worker, for ``bench_prepare.py``.

Why a module of its own: these two measure *where the run stands*, not who it beats. (L) is the BPE
itself: the text the official template renders, split over one process per core, each encoding
its part with single-threaded tiktoken over the same Llama-3 ranks, timed over the ``encode`` calls
alone: the bar the run is judged against (issue 31: run >= 1.0x (L)). (LS) is the same limit with
splintr, the engine a run encodes with, called as a run calls it: (L) says how far the run is from
tiktoken, (LS) how much of its own engine's speed it keeps.
The stage profile times one worker's stages (read+parse, validate, render, encode, labels,
hash, write) as separate passes over the same chunk with ``perf_counter`` around whole passes,
so the timer costs nothing per record (a sampling profiler inflates Python-heavy lines). Each stage
is timed in CPU seconds of this process (``process_time``): on a shared machine wall time counts
the other jobs too. The total is printed beside one real in-process ``process_chunk`` of the same
chunk (CPU seconds too).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

STAGES = ("read+parse", "validate", "render", "encode (BPE)", "labels", "hash", "write")


def split_balanced(texts: list[str], parts: int) -> list[list[str]]:
    """``texts`` cut into ``parts`` contiguous runs of about equal character count."""
    total = sum(map(len, texts)) or 1
    out: list[list[str]] = [[] for _ in range(parts)]
    acc = 0
    for t in texts:
        out[min(parts - 1, acc * parts // total)].append(t)
        acc += len(t)
    return out


def limit_encoding() -> Any:
    """tiktoken over the built-in tokenizer's ranks, with the Llama-3 control tokens as specials
    (they appear as text in the rendering)."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from sftdata.tokenizer import LLAMA3_PATTERN, llama3_model_file, load_tokenizer

    tok = load_tokenizer()
    specials = {name: int(i) for i, name in tok.meta["special_tokens"].items()}
    ranks = load_tiktoken_bpe(str(llama3_model_file()))
    return tiktoken.Encoding(name="bench-limit", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                             special_tokens=specials)


def _limit_worker(enc: Any, texts: list[str], barrier: Any, results: Any) -> None:
    barrier.wait()
    cpu0, t0 = time.process_time(), time.perf_counter()
    tokens = 0
    encode = enc.encode
    for t in texts:
        tokens += len(encode(t, allowed_special="all"))
    results.put((tokens, time.perf_counter() - t0, time.process_time() - cpu0))


def run_limit(texts: list[str], processes: int) -> dict[str, Any]:
    """(L): each part in its own forked process (the encoder is built before the fork, outside the
    timing); all start together at a barrier. Wall seconds: the slowest part's encode time."""
    enc = limit_encoding()
    enc.encode("warm up", allowed_special="all")
    return _forked_parts(_limit_worker, [(enc, part) for part in split_balanced(texts, processes)])


def _forked_parts(worker: Any, args: list[tuple]) -> dict[str, Any]:
    """``worker(*a, barrier, results)`` for each ``a`` of ``args`` in a forked process of its own, all
    started together at a barrier; each puts (tokens, wall s, CPU s). Wall: the slowest part's."""
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(len(args)), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(*a, barrier, results)) for a in args]
    for p in procs:
        p.start()
    got = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return {"tokens": sum(g[0] for g in got), "seconds": max(g[1] for g in got),
            "cpu_seconds": sum(g[2] for g in got), "parts": [round(g[1], 3) for g in got]}


def split_at_specials(texts: list[str], specials: list[str]) -> tuple[list[str], int]:
    """The text segments between the special tokens of ``texts`` (empty ones left out), and how
    many special tokens there were: a run never sends a control token to splintr (its id is
    written directly), only the text around it."""
    import re

    pattern = re.compile("(" + "|".join(map(re.escape, sorted(specials, key=len, reverse=True))) + ")")
    segments: list[str] = []
    count = 0
    for text in texts:
        for i, part in enumerate(pattern.split(text)):
            if i % 2:
                count += 1
            elif part:
                segments.append(part)
    return segments, count


def _splintr_worker(encode: Any, segments: list[str], specials: int, barrier: Any, results: Any) -> None:
    barrier.wait()
    cpu0, t0 = time.process_time(), time.perf_counter()
    size = 0
    for t in segments:
        size += len(encode(t))  # int32 ids as bytes: 4 bytes a token
    results.put((size // 4 + specials, time.perf_counter() - t0, time.process_time() - cpu0))


def run_limit_splintr(texts: list[str], processes: int) -> dict[str, Any]:
    """(LS): (L) with the engine `run` uses. The built-in tokenizer's splintr object, built the way
    a run builds it (``load_tokenizer().engine``, before the fork, warmed up), and the call a run
    makes for every text piece (``encode_text_bytes``: splintr's ``encode_flat`` with the
    lone-surrogate repair). splintr, as a run builds it, knows no special tokens, so each part's
    text is cut at the control tokens before the timing, as a run never encodes those (each counts
    one token); the same contiguous parts as (L), the same barrier start, the slowest part's wall."""
    from sftdata.tokenizer import load_tokenizer

    tok = load_tokenizer()
    encode = tok.encode_text_bytes
    encode("warm up")
    specials = list(tok.meta["special_tokens"].values())
    parts = [split_at_specials(part, specials) for part in split_balanced(texts, processes)]
    return {**_forked_parts(_splintr_worker, [(encode, segs, n) for segs, n in parts]),
            "calls": sum(len(segs) for segs, _ in parts)}


def stage_profile(corpus: Path, template: str, date_string: str) -> dict[str, Any]:
    """Seconds per stage of one worker over the whole ``corpus`` as one chunk, each stage a pass.

    ``encode (BPE)`` is the tokenizer's text encoder called on every text piece the encoder would
    send it (constant pieces are cached by the encoder and left out); ``labels`` is the piece
    encoder with that BPE answered from a dict (dispatch, id arrays, label arrays, length checks).
    """
    from sftdata.config import Settings
    from sftdata.process.chunk import process_chunk
    from sftdata.process.record import RecordProcessor, conversation_hashes
    from sftdata.stages.encode import PieceEncoder
    from sftdata.stages.read.jsonl import Chunk
    from sftdata.stages.read.sources import iter_records
    from sftdata.stages.records import Conversation
    from sftdata.stages.render import TEXT, TRAINED
    from sftdata.stages.write.arrow import BASE_SCHEMA, ShardWriter

    settings = Settings(template=template, date_string=date_string)
    chunk = Chunk(0, str(corpus.resolve()), corpus.name, 0, corpus.stat().st_size, 1)
    proc = RecordProcessor(settings)
    encode_text = proc.tokenizer.encode_text_bytes  # what the piece encoder calls: ids as int32 bytes
    encode_text("warm up")
    t: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        t0 = time.process_time()
        out = fn()
        t[name] = time.process_time() - t0
        return out

    recs = timed("read+parse", lambda: [r for r in iter_records(chunk, settings.max_record_bytes,
                                                                 settings.max_decompressed_bytes) if r[3] is None])

    def validate() -> list[Conversation]:
        out = []
        for line, obj, _raw, _rej in recs:
            try:
                out.append(proc.conversation(obj, chunk.name, line, chunk.format))
            except Exception:  # noqa: BLE001 - a rejected record is not part of the profile
                pass
        return out

    convs = timed("validate", validate)
    rendered = timed("render", lambda: [proc.renderer.render(c) for c in convs])
    texts = [v for pieces in rendered for k, v in pieces if k in (TEXT, TRAINED)]
    bpe = timed("encode (BPE)", lambda: {x: encode_text(x) for x in texts})
    # the piece encoder again, its BPE answered from the pass above: one dict lookup per text piece
    # in a Python function, like the real encoder's closure (constant pieces and roles are encoded
    # once and cached by the piece encoder, as in a run)

    def answered(text: str) -> bytes:
        ids = bpe.get(text)
        return ids if ids is not None else encode_text(text)

    labeller = PieceEncoder(SimpleNamespace(encode_text_bytes=answered, token_id=proc.tokenizer.token_id),
                            settings.max_length, settings.truncation)
    labeller.encode(rendered[0]) if rendered else None

    def labels() -> list[Any]:
        out = []
        for pieces in rendered:
            try:
                out.append(labeller.encode(pieces))
            except Exception:  # noqa: BLE001 - too long / nothing trained: rejected, not written
                out.append(None)
        return out

    encoded = timed("labels", labels)
    hashes = timed("hash", lambda: [conversation_hashes(c) for c in convs])
    tokens = sum(len(e.input_ids) for e in encoded if e is not None)
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as d:
        def write() -> None:
            with ShardWriter(Path(d), 0, settings.shard_size, BASE_SCHEMA) as w:
                for c, e, (h, ph) in zip(convs, encoded, hashes, strict=True):
                    if e is not None:
                        w.add(c.id, e.input_ids, e.labels, h, ph)
                w.finish()

        timed("write", write)
    with tempfile.TemporaryDirectory(prefix="bench-chunk-") as d:
        t0 = time.process_time()
        result = process_chunk(chunk, settings, d, proc)
        whole = time.process_time() - t0
    return {"stages": {k: t[k] for k in STAGES}, "process_chunk": whole, "tokens": tokens,
            "chunk_tokens": result.tokens, "records": len(convs), "pid": os.getpid()}
