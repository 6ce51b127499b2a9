"""splintr over Meta's BPE ranks: the default encoder of the built-in tokenizer.

Why a second engine: the byte-pair merge is most of a run's time, and splintr's merge gives the
same ids as tiktoken's over the same ranks and pattern about 3.6x faster on the shared corpus's
pieces (measured: 0.435 s against 1.573 s of CPU for the 67,200 rendered pieces of 4 copies). It is also linear on very long pre-tokens, where
tiktoken is quadratic, so no text has to go to the Hugging Face encoder, and it builds straight
from ``tokenizer.model``'s bytes, so a run never decodes the ranks into a Python dict.

tiktoken stays: it is the engine of ``encoder: tiktoken``, the one ``auto`` falls back to when
splintr is not installed, and the reference the identity tests compare splintr with
(``tests/tokenizer/test_bpe_engines.py``). Both engines see the same verified file: its SHA-256 is checked
against the one the tokenizer's description was made from before the bytes are used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sftdata.tokenizer.llama3 import LLAMA3_PATTERN, TokenizerError

Encode = Callable[[str], list[int]]


# Below this many input bytes ``auto`` takes tiktoken: splintr's set-up (about 0.37 s against
# tiktoken's 0.25 s, both measured on the 2-core machine) pays for itself after roughly 300k tokens,
# about 1 MB of chat JSONL; the ids are the same either way.
SPLINTR_MIN_INPUT_BYTES = 1 << 20


def pick_engine(input_bytes: int) -> str:
    """The engine ``encoder: auto`` runs for the built-in tokenizer on ``input_bytes`` of input."""
    return "splintr" if input_bytes >= SPLINTR_MIN_INPUT_BYTES and splintr_available() else "tiktoken"


def splintr_available() -> bool:
    """Whether the splintr engine can be used in this environment (``auto`` then picks it)."""
    from importlib.util import find_spec

    return find_spec("splintr") is not None


def build_splintr(model_file: Path, model_sha256: str) -> Any:
    """A ``splintr.Tokenizer`` over Meta's ranks, with no special tokens: it can only produce the
    ids of text. Refuses a file whose bytes are not the ones ``model_sha256`` names."""
    import splintr

    data = Path(model_file).read_bytes()
    if hashlib.sha256(data).hexdigest() != model_sha256:
        raise TokenizerError(f"{model_file} changed while sftdata was using it (SHA-256 differs); run again")
    engine = splintr.Tokenizer.from_bytes(data, LLAMA3_PATTERN, {})
    # The first text that needs a merge builds splintr's merge tables (about 0.17 s); done here, so
    # the cost is paid once in the driver and forked workers inherit the tables.
    engine.encode_ordinary("Cutting Knowledge")
    return engine


def repair_surrogates(text: str) -> str:
    """Lone surrogates (text that is not valid Unicode) become U+FFFD: tiktoken's own repair, so
    both engines give the same ids for the same broken text."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _repairing(encode: Callable[[str], Any]) -> Callable[[str], Any]:
    """``encode`` with tiktoken's repair for text that holds lone surrogates (which splintr refuses)."""

    def repaired(text: str) -> Any:
        try:
            return encode(text)
        except UnicodeEncodeError:
            return encode(repair_surrogates(text))

    return repaired


def make_splintr_bytes_encoder(engine: Any) -> Callable[[str], bytes]:
    """``encode(text) -> bytes``: the ids of ``make_splintr_encoder`` as int32s, as the bytes
    ``numpy.frombuffer(b, numpy.int32)`` reads (``tests/tokenizer/test_bpe_engines.py`` compares them).

    splintr's ``encode_flat`` hands back the ids as one bytes object instead of a list of Python
    ints: measured on the shared corpus's 10,432 assistant texts, 0.22 s against 0.37 s, and
    0.30 s against 0.52 s once the ids are a numpy array. ``PieceEncoder`` joins these bytes."""
    return _repairing(engine.encode_flat)


def make_splintr_encoder(engine: Any) -> Encode:
    """``encode(text) -> ids``: text only, no special-token matching, no BOS; the hot path is one
    call into Rust."""
    return _repairing(engine.encode_ordinary)
