"""Meta's ``tokenizer.model`` and splintr over it: the one engine of the built-in tokenizer.

Why splintr: the byte-pair merge is most of a run's time, and splintr's merge gives the same ids
as tiktoken's and the Hugging Face conversion's over the same ranks and pattern
(``tests/tokenizer/test_bpe_engines.py`` keeps both as independent oracles), faster, and linear on very long
pre-tokens. It builds straight from ``tokenizer.model``'s bytes, so nothing decoded from the model
file is ever cached: the ranks a run encodes with are the bytes whose SHA-256 it computed itself
(``ModelSource``), and the cached description is checked against those same bytes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from sftdata.storage.opener import read_regular
from sftdata.tokenizer.llama3 import LLAMA3_PATTERN, TokenizerError

Encode = Callable[[str], list[int]]
MODEL_LIMIT = 64 << 20  # bytes: Meta's file is 2.2 MB


class ModelSource:
    """The bytes of a ``tokenizer.model`` (base64 token, space, rank: one line each), read once
    through the regular-file check; everything the run derives from the ranks comes from these."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.data = read_regular(self.path, MODEL_LIMIT)
        except OSError as exc:  # missing, not a regular file (UnsafeFileError), too large
            raise TokenizerError(f"cannot read the built-in tokenizer's model file: {exc}") from None
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self._ranks_seen: dict[bytes, int | None] = {}

    @cached_property
    def n_ranks(self) -> int:
        """How many ranks the file holds (its ranks are 0 .. n_ranks - 1: the last line says so)."""
        lines = self.data.count(b"\n") + (not self.data.endswith(b"\n"))
        last = self.data.rstrip(b"\n").rsplit(b"\n", 1)[-1].split(b" ")
        if len(last) != 2 or last[1] != str(lines - 1).encode():
            raise TokenizerError(f"{self.path} is not a tiktoken BPE file (base64 token and rank per line)")
        return lines

    @cached_property
    def max_token_bytes(self) -> int:
        """The byte length of the longest token (decoded from the longest base64 fields only).

        Every worker that refuses a long record needs it, so the field lengths come from the
        positions of the spaces and line ends (numpy) rather than a Python object per line; a file
        that is not one space per line is measured line by line."""
        fields = _field_lengths(self.data)
        if fields is None:
            tokens = [line.partition(b" ")[0] for line in self.data.split(b"\n")]
            longest = max(map(len, tokens))
            return max(len(base64.b64decode(t)) for t in tokens if len(t) == longest)
        starts, sizes = fields
        longest = int(sizes.max())
        return max(len(base64.b64decode(self.data[s:s + longest])) for s in starts[sizes == longest].tolist())

    def ranks(self) -> dict[bytes, int]:
        """Every rank, decoded as tiktoken's loader decodes the file (for the one-time conversion)."""
        return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in self.data.splitlines()
                                                                         if line)}

    def rank_of(self, token: bytes) -> int | None:
        """The rank of ``token`` as the file states it; None when it is not a token."""
        if token not in self._ranks_seen:
            b64 = base64.b64encode(token) + b" "
            if self.data.startswith(b64):
                start = len(b64)
            else:
                at = self.data.find(b"\n" + b64)
                start = -1 if at < 0 else at + 1 + len(b64)
            end = self.data.find(b"\n", start) if start >= 0 else -1
            self._ranks_seen[token] = None if start < 0 else int(self.data[start:end if end >= 0 else None])
        return self._ranks_seen[token]

    def bpe(self, piece: bytes) -> list[tuple[int, bytes]]:
        """(rank, bytes) of each token of one pre-token, by tiktoken's byte-pair merge (the pair of
        lowest rank first), looking ranks up in the file: for the few short pieces the cached
        description is checked with, without decoding the 128k ranks."""
        parts = [piece] if self.rank_of(piece) is not None else [piece[i:i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            pairs = [(r, i) for i in range(len(parts) - 1) if (r := self.rank_of(parts[i] + parts[i + 1])) is not None]
            if not pairs:
                break
            _, i = min(pairs)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        ranks = [self.rank_of(p) for p in parts]
        if None in ranks:
            raise TokenizerError(f"{self.path} lacks a single-byte token of {piece!r}")
        return list(zip(ranks, parts, strict=True))  # type: ignore[arg-type]


def _field_lengths(data: bytes) -> tuple[Any, Any] | None:
    """(start, length) of the first field of every line, as numpy arrays, when each line holds
    exactly one space; else None."""
    import numpy as np

    arr = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(arr == 10)
    if not data.endswith(b"\n"):
        ends = np.append(ends, len(data))
    starts = np.concatenate(([0], ends[:-1] + 1))
    spaces = np.flatnonzero(arr == 32)
    if not len(starts) or len(spaces) != len(starts) or not (np.all(spaces >= starts) and np.all(spaces < ends)):
        return None
    return starts, spaces - starts


def build_splintr(source: ModelSource) -> Any:
    """A ``splintr.Tokenizer`` over the ranks of ``source``, with no special tokens: it can only
    produce the ids of text."""
    import splintr

    try:
        engine = splintr.Tokenizer.from_bytes(source.data, LLAMA3_PATTERN, {})
    except Exception as exc:  # noqa: BLE001 - the engine's own parse error, made one line
        raise TokenizerError(f"splintr cannot read {source.path}: {exc}") from None
    # The first text that needs a merge builds splintr's merge tables; done here, so the cost is
    # paid once in the driver and forked workers inherit the tables.
    engine.encode_ordinary("Cutting Knowledge")
    return engine


def repair_surrogates(text: str) -> str:
    """Lone surrogates (text that is not valid Unicode) become U+FFFD: tiktoken's own repair, so
    broken text gets the ids tiktoken and the Hugging Face tokenizer give it."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _repairing(encode: Callable[[str], Any]) -> Callable[[str], Any]:
    """``encode`` with the repair for text that holds lone surrogates (which splintr refuses)."""

    def repaired(text: str) -> Any:
        try:
            return encode(text)
        except UnicodeEncodeError:
            return encode(repair_surrogates(text))

    return repaired


def make_splintr_bytes_encoder(engine: Any) -> Callable[[str], bytes]:
    """``encode(text) -> bytes``: the ids of ``make_splintr_encoder`` as int32s, as the bytes
    ``numpy.frombuffer(b, numpy.int32)`` reads: splintr's ``encode_flat`` hands them back as one
    bytes object, without a Python int per token. ``PieceEncoder`` joins these bytes."""
    return _repairing(engine.encode_flat)


def make_splintr_encoder(engine: Any) -> Encode:
    """``encode(text) -> ids``: text only, no special-token matching, no BOS."""
    return _repairing(engine.encode_ordinary)
