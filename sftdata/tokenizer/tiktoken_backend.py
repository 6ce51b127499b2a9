"""tiktoken over Meta's BPE ranks: the fast encoder of the built-in tokenizer.

Why: for Meta's own ranks tiktoken gives the same ids as the Hugging Face tokenizer, faster
(``tests/tokenizer/test_tokenizer.py`` proves the ids equal). Everything here is built on first use: the
audit only decodes a few role names and never needs the ranks. The decoded ranks are cached in
the checked, non-executable format of ``ranks_file``; a cache file that fails its checks is
rebuilt from ``tokenizer.model``, never trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from sftdata.tokenizer.llama3 import LLAMA3_PATTERN

# tiktoken's BPE is quadratic in the length of one pre-token; a text containing a very long
# pre-token (100k letters, spaces or symbols in a row) goes to the Hugging Face encoder, which
# handles it in n log n. Runs are measured like the Llama-3 pre-tokenizer cuts them (digits come
# in threes), so long CJK paragraphs with punctuation stay on the fast path.
LONG_PIECE = 4096
_LONG_RUN = rf"\p{{L}}{{{LONG_PIECE},}}|[^\s\p{{L}}\p{{N}}]{{{LONG_PIECE},}}|\s{{{LONG_PIECE},}}"


class TiktokenBackend:
    """Meta's ranks (``model_file``) as a tiktoken ``Encoding``; decoding needs the ranks alone.

    The decoded ranks are kept in ``cache_folder``, checked against ``model_sha256``.
    """

    def __init__(self, model_file: Path, cache_folder: Path, model_sha256: str) -> None:
        self.model_file, self.cache_folder, self.model_sha256 = model_file, cache_folder, model_sha256
        self._ranks: dict[bytes, int] | None = None
        self._encoding: Any = None
        self._bytes_of: dict[int, bytes] | None = None
        self._splintr: Any = None
        self._index: Any = None
        self._pair_max: list[int] | None = None

    def _file(self) -> Any:
        """(the ranks file's module, its path)."""
        # imported here: loading a tokenizer for the audit never needs the ranks
        from sftdata.tokenizer import ranks_file

        return ranks_file, self.cache_folder / ranks_file.RANKS_FILE

    def _rebuild(self) -> bytes:
        """The ranks decoded from the model file and the cache file rewritten; returns its bytes."""
        from tiktoken.load import load_tiktoken_bpe

        ranks_file, path = self._file()
        self._ranks = load_tiktoken_bpe(str(self.model_file))
        return ranks_file.write_ranks_file(path, self._ranks, self.model_sha256)

    @property
    def ranks(self) -> dict[bytes, int]:
        if self._ranks is None:
            ranks_file, path = self._file()
            try:
                self._ranks = ranks_file.read_ranks_file(path, self.model_sha256)
            except ranks_file.RanksFileError:  # missing, damaged, foreign or stale: rebuilt
                self._rebuild()
        return self._ranks

    @property
    def index(self) -> Any:
        """The ranks as a ``ranks_file.RankIndex`` (the checked file, not decoded into a dict)."""
        if self._index is None:
            ranks_file, path = self._file()
            try:
                self._index = ranks_file.RankIndex(path.read_bytes(), self.model_sha256)
            except (OSError, ranks_file.RanksFileError):
                self._index = ranks_file.RankIndex(self._rebuild(), self.model_sha256)
        return self._index

    @property
    def pair_max(self) -> list[int]:
        """The longest rank per two-byte prefix (``RankIndex.pair_max``), for ``rank_subset``."""
        if self._pair_max is None:
            self._pair_max = self.index.pair_max()
        return self._pair_max

    @property
    def encoding(self) -> Any:
        if self._encoding is None:
            import tiktoken

            self._encoding = tiktoken.Encoding(name="sftdata-llama3", pat_str=LLAMA3_PATTERN,
                                               mergeable_ranks=self.ranks, special_tokens={})
        return self._encoding

    @property
    def built(self) -> bool:
        """Whether the core over all ranks exists (in a forked worker: inherited from the driver)."""
        return self._encoding is not None

    @property
    def splintr(self) -> Any:
        """The same ranks as a ``splintr.Tokenizer`` (built from the checked file on first use)."""
        if self._splintr is None:
            from sftdata.tokenizer.splintr_backend import build_splintr

            self._splintr = build_splintr(self.model_file, self.model_sha256)
        return self._splintr

    def subset_encode(self, texts: Iterable[str]) -> Encode:
        """tiktoken's core over only the ranks ``texts`` can reach (``rank_subset``): the same ids,
        built in milliseconds instead of 0.18 s. Other texts are checked and handled too (see
        ``make_subset_encode``); the full core is built only if they keep needing more ranks."""
        from sftdata.tokenizer.rank_subset import RankSubset, make_subset_encode

        primed = set(texts)
        subset = RankSubset(self.index, self.pair_max, LLAMA3_PATTERN)
        subset.add(primed)
        return make_subset_encode(subset, primed, lambda: self.encoding._core_bpe)

    def decode_bytes(self, ids: list[int]) -> bytes:
        if self._bytes_of is None:
            self._bytes_of = {i: b for b, i in self.ranks.items()}
        return b"".join(self._bytes_of[i] for i in ids)


Encode = Callable[[str], list[int]]


@lru_cache(maxsize=1)
def _long_run() -> Callable[[str], object]:
    """The long-run search, compiled on the first text of ``LONG_PIECE`` characters: importing
    ``regex`` costs 25 ms, which short runs never pay."""
    import regex

    return regex.compile(_LONG_RUN).search


def make_encoder(backend: TiktokenBackend, fallback: Encode, core: Encode | None = None) -> Encode:
    """``encode(text) -> ids``: text only, no special-token parsing, no BOS.

    A closure because this is the per-piece hot path: it calls tiktoken's core directly (``core``:
    the one over all ranks unless given, e.g. ``backend.subset_encode``) and looks for long runs
    (which go to ``fallback``, the Hugging Face encoder) only in long texts.
    """
    if core is None:
        core = backend.encoding._core_bpe.encode_ordinary

    def tiktoken_encode(text: str) -> list[int]:
        if len(text) >= LONG_PIECE and _long_run()(text):
            return fallback(text)
        try:
            return core(text)
        except UnicodeEncodeError:  # lone surrogates: repaired as tiktoken's own encode_ordinary does
            return core(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    return tiktoken_encode
