"""tiktoken's own BPE core over only the ranks a known set of texts can reach.

Why: building tiktoken's core over Meta's 128k ranks costs about 0.18 s of every run (measured on
the 2-core machine; the decoded ranks another 0.03-0.07 s), which is a quarter of a 50-record run.
A core built over a few thousand ranks costs 5-20 ms here, and gives the same ids for a text
as long as it holds every rank the full core would look up for that text. This module finds a
superset of those ranks without tiktoken's regex, and checks any text it was not built from
before encoding it.

Which ranks the core looks up: it cuts the text into pre-tokens with the Llama-3 pattern, and for
each pre-token looks up the pre-token itself, then (when it is not one token) only byte strings
inside it. So every rank substring of every pre-token is enough.

Finding the pre-tokens without the engine's Unicode tables: some places are pre-token boundaries
in every Unicode version, because of ASCII characters alone (``_CUT``): an ASCII letter followed
by an ASCII non-letter, an ASCII digit followed by an ASCII non-digit, a printable ASCII character
followed by a space. No alternative of the pattern can match across one (a letter is followed only
by letters inside a match, a digit only by digits, a space only by whitespace). The text between
such cuts (a *region*) therefore holds whole pre-tokens:

- a region of tab, line feed, carriage return and printable ASCII only (a whole text of them is
  one region: its two ends are boundaries too) is split with the pattern
  written for ASCII (``_ASCII_PIECES``, stdlib ``re``; on ASCII, ``\\p{L}`` is ``[A-Za-z]``,
  ``\\p{N}`` is ``[0-9]`` and ``\\s`` is the same six characters in both engines). A region never
  ends in whitespace (except at the end of the text), so the pattern's one lookahead sees the
  same character as it does in the whole text. A pre-token that is a rank is all the core needs;
  otherwise every rank substring of it;
- any other region: every rank substring of the region, bounded by the longest rank that starts
  with each two-byte prefix (``pair_max``).

The candidates are looked up in batches in the ranks file's own bytes (``ranks_file.RankIndex``),
so a small run never decodes the 128k ranks into a dict.

``tests/tokenizer/test_rank_subset.py`` compares the ids with the full core's on the shared corpus, varied
and random Unicode text, and every short ASCII string over the pattern's character classes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

_CUT = re.compile(r"(?<=[A-Za-z])(?=[\x00-\x40\x5b-\x60\x7b-\x7f])|(?<=[0-9])(?=[\x00-\x2f\x3a-\x7f])"
                  r"|(?<=[!-~])(?= )")
_NOT_PLAIN_ASCII = re.compile(r"[^\t\n\r -~]")
_ASCII_PIECES = re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]{1,3}"
                           r"| ?[^\sA-Za-z0-9]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", re.ASCII)

# A run of at most this many input bytes (on the tiktoken engine, which ``auto`` picks below 1 MiB)
# may build, for each chunk, tiktoken's core over only the ranks the chunk's texts reach
# (``Tokenizer.primed``) instead of the core over all ranks; ``priming_pays`` decides per chunk.
PRIME_MAX_BYTES = 1 << 20
# Finding the ranks costs per character of plain-ASCII text (mostly one look-up per pre-token) and
# far more per byte of other text (every substring is looked up there). So a chunk's work is counted
# in characters, each extra UTF-8 byte of a character weighing NON_ASCII_WEIGHT: with 15, priming and
# the full core took the same time at about the same work in English and Chinese (whole runs of
# 50-1,000 records on the 2-core machine, benchmarks/RESULTS.md: English 785,664 equal, Chinese
# 1,005,680 priming 0.03 s slower). A chunk primes up to PRIME_MAX_WORK (tool calls at 432,753: 0.15 s
# faster; English at 381,928: 0.07 s).
NON_ASCII_WEIGHT = 15
PRIME_MAX_WORK = 600_000


def priming_pays(texts: Iterable[str]) -> bool:
    """Whether building the small core for ``texts`` costs clearly less than the full core."""
    work = 0
    for text in texts:
        work += len(text)
        if not text.isascii():
            work += NON_ASCII_WEIGHT * (len(text.encode("utf-8", "surrogatepass")) - len(text))
        if work > PRIME_MAX_WORK:
            return False
    return True


# After this many texts that needed ranks beyond the primed ones, the full core is built instead:
# each such text rebuilds the small core, and a run that keeps missing is not the small run this is for.
MAX_REBUILDS = 8


def regions(text: str) -> list[str]:
    """``text`` cut at the pre-token boundaries that ASCII characters alone decide."""
    return _CUT.split(text)


class RankSubset:
    """The ranks the texts added so far can reach, and tiktoken's core over them.

    ``index``: Meta's ranks (``ranks_file.RankIndex``, looked up in batches); ``pair_max``: for each
    two-byte prefix ``a * 256 + b``, the length of the longest rank starting with it (0: none);
    ``pattern``: the Llama-3 pattern."""

    def __init__(self, index: Any, pair_max: list[int], pattern: str) -> None:
        self._index = index
        self._pair_max = pair_max
        self._pattern = pattern
        self._subset: dict[bytes, int] = index.find([bytes((i,)) for i in range(256)])
        self._covered: set[str] = set()
        self._pieces: set[str] = set()
        self._core: Any = None

    def covers(self, text: str) -> bool:
        """Whether every pre-token (plain ASCII) or region of ``text`` has been added: then the core
        gives ``text`` the ids the full core would."""
        if _NOT_PLAIN_ASCII.search(text) is None:
            return self._pieces.issuperset(_ASCII_PIECES.findall(text))
        return all(region in self._covered if _NOT_PLAIN_ASCII.search(region) is not None
                   else self._pieces.issuperset(_ASCII_PIECES.findall(region)) for region in regions(text))

    def add(self, texts: Iterable[str]) -> None:
        """Add the ranks every region of ``texts`` can reach. A plain-ASCII text is one region (its
        ends are pre-token boundaries). A region that is not valid UTF-8 (lone surrogates) adds
        nothing: the encoder repairs such a text first, as tiktoken does."""
        whole: list[bytes] = []  # new plain-ASCII pre-tokens: a rank, or else their substrings
        wanted: list[set[bytes]] = [set() for _ in range(self._index.max_length + 1)]  # by length
        for text in texts:
            if _NOT_PLAIN_ASCII.search(text) is None:
                self._pretokens(text, whole)
                continue
            for region in regions(text):
                if _NOT_PLAIN_ASCII.search(region) is None:
                    self._pretokens(region, whole)
                elif region not in self._covered:
                    try:
                        self._substrings(region.encode("utf-8"), wanted)
                    except UnicodeEncodeError:
                        continue
                    self._covered.add(region)
        found = self._index.find(whole)  # the core looks a whole-rank pre-token up and nothing else
        for data in whole:
            if data not in found:
                self._substrings(data, wanted)
        found.update(self._index.find_by_length(enumerate(wanted)))
        before = len(self._subset)
        self._subset.update(found)
        if len(self._subset) != before:
            self._core = None

    def _pretokens(self, region: str, out: list[bytes]) -> None:
        pieces = self._pieces
        for piece in _ASCII_PIECES.findall(region):
            if piece not in pieces:
                pieces.add(piece)
                out.append(piece.encode("ascii"))

    def _substrings(self, data: bytes, out: list[set[bytes]]) -> None:
        """Every substring of two bytes or more that may be a rank, into ``out`` by length."""
        pair_max = self._pair_max
        n = len(data)
        for i in range(n - 1):
            for j in range(i + 2, min(n, i + pair_max[(data[i] << 8) | data[i + 1]]) + 1):
                out[j - i].add(data[i:j])

    @property
    def core(self) -> Any:
        """tiktoken's ``CoreBPE`` over the ranks added so far (rebuilt after ``add`` grew them)."""
        if self._core is None:
            from tiktoken import _tiktoken

            self._core = _tiktoken.CoreBPE(self._subset, {}, self._pattern)
        return self._core


def make_subset_encode(subset: RankSubset, primed: set[str], full: Callable[[], Any]) -> Callable[[str], list[int]]:
    """``encode(text) -> ids`` over ``subset``: texts in ``primed`` (the ones ``subset`` was built from)
    go straight to the core; any other text is checked region by region and, when it needs more
    ranks, added (the core is rebuilt). After ``MAX_REBUILDS`` such texts every text goes to
    ``full()``, the core over all ranks. Raises ``UnicodeEncodeError`` on lone surrogates, like the
    core it stands for."""
    state: dict[str, Any] = {"full": None, "rebuilds": 0}

    def encode(text: str) -> list[int]:
        if state["full"] is not None:
            return state["full"](text)
        if text not in primed and not subset.covers(text):
            if state["rebuilds"] >= MAX_REBUILDS:
                state["full"] = full().encode_ordinary
                return state["full"](text)
            text.encode("utf-8")  # lone surrogates raise here, before anything is added, as in the core
            subset.add((text,))
            state["rebuilds"] += 1
        return subset.core.encode_ordinary(text)

    return encode
