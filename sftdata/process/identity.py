"""What a chunk was made from: a digest of its input bytes, so ``--resume`` never serves stale rows.

Why: a resumed run keeps chunks an earlier process committed. That is only right if the bytes
those chunks were made from are still the bytes the plan names. File name, size and even the
modification time survive a ``cp -p`` or ``rsync -t`` of an edited file, so each chunk's
done-marker records a BLAKE2b digest of its input byte range (the whole file for kinds that are
read whole: compressed, JSON arrays, Parquet, ``datasets`` files), taken by the worker right
before it reads the chunk (the bytes are then in the page cache for the read that follows). A
resumed run re-digests the kept chunks' ranges and refuses a mismatch, naming the input; a chunk
whose input ends before its planned end fails the run instead of committing half of it.
"""

from __future__ import annotations

import hashlib

from sftdata.errors import RunError
from sftdata.stages.read.jsonl import Chunk
from sftdata.stages.read.remote import input_size, open_input
from sftdata.storage import display

_BLOCK = 1 << 20
_RANGED = ("jsonl",)  # kinds whose chunks are byte ranges; the others are read whole


class InputChanged(RunError):
    """An input is not the bytes the plan was made from (edited, replaced or truncated)."""


def chunk_range(chunk: Chunk) -> tuple[int, int]:
    if chunk.kind in _RANGED:
        return chunk.start, chunk.end
    return 0, input_size(chunk.path)


def chunk_digest(chunk: Chunk, planned_size: int | None = None) -> str:
    """``blake2b:<hex>`` of the chunk's input bytes; ``InputChanged`` when the input is shorter
    than planned (or than its recorded size, ``planned_size``, for whole-file kinds)."""
    start, end = chunk_range(chunk)
    if planned_size is not None and chunk.kind not in _RANGED and end != planned_size:
        raise InputChanged(f"input {display(chunk.path)} is {end} bytes, the run planned {planned_size}: it "
                           "changed since the run began")
    h = hashlib.blake2b(digest_size=16)
    left = end - start
    with open_input(chunk.path) as f:
        f.seek(start)
        while left > 0:
            block = f.read(min(_BLOCK, left))
            if not block:
                raise InputChanged(f"input {display(chunk.path)} ends at byte {end - left}, before the planned end "
                                   f"of chunk {chunk.index} (byte {end}): it was truncated while the run read it")
            h.update(block)
            left -= len(block)
    return "blake2b:" + h.hexdigest()


def input_digests(chunks: list[Chunk], digests: dict[int, str], inputs: list[str]) -> dict[str, str]:
    """Per input (as the plan names it, ``display`` form): one digest over its chunks' digests in
    order. A ``datasets`` folder's chunks are its Arrow files, so they belong to their folder."""
    from pathlib import Path

    names = set(inputs)
    per_input: dict[str, hashlib.blake2b] = {i: hashlib.blake2b(digest_size=16) for i in inputs}
    for c in chunks:
        owner = display(c.path)
        if owner not in names:
            owner = display(str(Path(c.path).parent))
        per_input[owner].update(digests[c.index].encode())
    return {i: "blake2b:" + h.hexdigest() for i, h in per_input.items()}
