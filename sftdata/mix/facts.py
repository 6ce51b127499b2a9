"""What the first pass of a mix learns of each valid record, as fixed-width columns per chunk.

Why columns and not an object per record: the driver holds every source's facts until the
decisions are made, so a record costs what its columns cost (docs/mixing.md, "Limits"), and a
chunk's facts travel from a worker to the driver as a few buffers. Each key is computed where
the record is processed (in the workers, in parallel), and only the columns the recipe needs:

- ``order``: ``sha256("{seed}:{content_hash}")``, the keyed order of a source whose take is not
  "everything" (an order cannot change which rows a source gives whole);
- ``content``: the content hash (blake2b, 16 bytes), for ``dedupe: exact`` across the mix;
- ``prompt``: ``sha256("{seed}:eval:{prompt_hash}")``, the prompt group and its place in the
  split's order, and the key a decontamination file's prompts are matched with;
- ``ids``: the record ids, only for ``dedupe: exact`` (the quarantine line of a later copy names
  the kept one).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

KEY = 32  # bytes of a sha256 key
CONTENT = 16  # bytes of a content hash (blake2b, digest_size=16)


def keyed(seed: int, digest: str, salt: str = "") -> bytes:
    """``sha256("{seed}:{salt}{digest}")``: the keyed order of a content hash (salt ``""``) or of
    a prompt hash (salt ``"eval:"``). Sorting the digests as bytes sorts their hex spellings."""
    return hashlib.sha256(f"{seed}:{salt}{digest}".encode()).digest()


@dataclass(frozen=True)
class Needs:
    """The columns a recipe's decisions read."""

    seed: int
    order: frozenset[str] = frozenset()  # the sources whose take needs the keyed order
    content: bool = False  # dedupe: exact
    prompt: bool = False  # a split or a decontamination file
    tokens: bool = False  # a token budget or a token-sized eval split (else -1 where not encoded)
    drops: bool = False  # dedupe or decontamination: a valid record may be quarantined (its line is kept)


@dataclass
class ChunkFacts:
    """One chunk's facts, in input order; a column the recipe does not need has zero width."""

    index: int
    source: str
    digest: str  # of the chunk's input bytes (``process.identity.chunk_digest``)
    lines: np.ndarray  # int64
    tokens: np.ndarray  # int32; -1: not counted
    order: np.ndarray  # (n, 32) uint8, or (n, 0)
    content: np.ndarray  # (n, 16) uint8, or (n, 0)
    prompt: np.ndarray  # (n, 32) uint8, or (n, 0)
    id_data: bytes = b""  # the ids, UTF-8, one after the other (``dedupe: exact`` only)
    id_ends: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.lines)


class FactsBuilder:
    """Collects a chunk's facts (in a worker), a list per column; ``build`` computes the keys and
    gives the columns."""

    def __init__(self, needs: Needs, source: str) -> None:
        self.needs, self.source = needs, source
        self.lines: list[int] = []
        self.ids: list[str] = []
        self.contents: list[str] = []  # content hashes
        self.prompts: list[str] = []  # prompt hashes
        self.tokens: list[int] = []

    def add(self, line: int, rid: str, content_hash: str, prompt_hash: str, tokens: int) -> None:
        self.extend([line], [rid], [content_hash], [prompt_hash], [tokens])

    def extend(self, lines, rids: list[str], contents: list[str], prompts: list[str], tokens) -> None:
        """Facts of several records (``lines`` and ``tokens``: sequences of ints or numpy arrays)."""
        self.lines += np.asarray(lines, dtype=np.int64).tolist()
        self.ids += rids
        self.contents += contents
        self.prompts += prompts
        self.tokens += np.asarray(tokens, dtype=np.int64).tolist()

    def build(self, index: int, digest: str) -> ChunkFacts:
        n, need, seed = len(self.lines), self.needs, self.needs.seed
        contents, prompts = self.contents, self.prompts
        order = [keyed(seed, h) for h in contents] if self.source in need.order else []
        prompt = [keyed(seed, h, "eval:") for h in prompts] if need.prompt else []
        ids = [i.encode("utf-8", "surrogatepass") for i in self.ids] if need.content else []
        return ChunkFacts(index, self.source, digest, np.array(self.lines, dtype=np.int64),
                          np.array(self.tokens, dtype=np.int32), _matrix(order, n, KEY),
                          _matrix([bytes.fromhex("".join(contents))] if need.content and n else [], n, CONTENT),
                          _matrix(prompt, n, KEY), b"".join(ids),
                          np.cumsum([len(i) for i in ids], dtype=np.int64))


def _matrix(keys: list[bytes], n: int, width: int) -> np.ndarray:
    if not keys:
        return np.zeros((n, 0), dtype=np.uint8)
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(n, width)


@dataclass
class Facts:
    """Every chunk's facts in plan order (chunks in order, lines ascending), as one set of columns."""

    chunk: np.ndarray  # int64: the chunk index of each record
    source: np.ndarray  # int32: the source's place in the recipe
    lines: np.ndarray
    tokens: np.ndarray
    order: np.ndarray
    content: np.ndarray
    prompt: np.ndarray
    id_data: bytes
    id_ends: np.ndarray

    def __len__(self) -> int:
        return len(self.lines)

    def id_of(self, i: int) -> str:
        """The id of record ``i`` (``dedupe: exact`` only)."""
        return self.id_data[self.id_ends[i - 1] if i else 0:self.id_ends[i]].decode("utf-8", "surrogatepass")


def concatenate(parts: list[ChunkFacts], names: list[str], needs: Needs) -> Facts:
    """One table of the chunks' facts (``parts`` in plan order; emptied as they are copied, so the
    facts are held about once, not twice); ``order`` rows of sources that do not need it are zero."""
    place = {name: i for i, name in enumerate(names)}
    sizes = [len(p) for p in parts]
    n = sum(sizes)
    out = Facts(np.repeat(np.array([p.index for p in parts], dtype=np.int64), sizes),
                np.repeat(np.array([place[p.source] for p in parts], dtype=np.int32), sizes),
                np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int32),
                np.zeros((n, KEY if needs.order else 0), dtype=np.uint8),
                np.empty((n, CONTENT if needs.content else 0), dtype=np.uint8),
                np.empty((n, KEY if needs.prompt else 0), dtype=np.uint8), b"", np.empty(n, dtype=np.int64))
    ids, start, base = [], 0, 0
    for p in parts:
        end = start + len(p)
        out.lines[start:end], out.tokens[start:end] = p.lines, p.tokens
        for column in ("order", "content", "prompt"):
            if getattr(p, column).shape[1]:
                getattr(out, column)[start:end] = getattr(p, column)
        out.id_ends[start:end] = p.id_ends + base if len(p.id_ends) else 0
        base += len(p.id_data)
        ids.append(p.id_data)
        p.lines = p.tokens = p.order = p.content = p.prompt = p.id_ends = _NONE
        p.id_data = b""
        start = end
    out.id_data = b"".join(ids)
    return out


_NONE = np.zeros((0, 0), dtype=np.uint8)
