"""Tokenizers: the built-in Llama-3 tokenizer, any Hugging Face tokenizer, and a fast encoder.

Why a package: loading a tokenizer for the pipeline is several jobs, one module each.
``llama3`` fixes what decides ids in the Llama-3 format; ``cache`` converts Meta's
``tokenizer.model`` to a Hugging Face tokenizer once per machine and keeps its description;
``ranks_file`` stores the decoded BPE ranks as checked plain data (and looks tokens up in it
without decoding: ``RankIndex``); ``fingerprint`` hashes what decides ids; ``tiktoken_backend``
and ``splintr_backend`` are the two fast engines over Meta's ranks (same ids; splintr is faster
per token, tiktoken starts faster); ``rank_subset`` builds tiktoken's core over only the ranks a
small chunk's texts reach (same ids again, in milliseconds); ``wrapper`` is the
``Tokenizer`` the pipeline uses (text-only encoding, control-token ids); ``loader`` turns a
spec into one, cached per process. Import the public names from here.
"""

from sftdata.tokenizer.cache import cache_dir, convert_builtin
from sftdata.tokenizer.fingerprint import describe_backend, fingerprint_of
from sftdata.tokenizer.llama3 import (
    BUILTIN_LLAMA3,
    CONTROL_TOKENS,
    LLAMA3_PATTERN,
    LLAMA3_SPECIAL_TOKENS,
    ROLE_WORDS,
    TokenizerError,
    llama3_model_file,
)
from sftdata.tokenizer.loader import load_tokenizer
from sftdata.tokenizer.tiktoken_backend import LONG_PIECE
from sftdata.tokenizer.wrapper import Tokenizer

_convert_builtin = convert_builtin  # the name the tests and older callers import

__all__ = [
    "BUILTIN_LLAMA3",
    "CONTROL_TOKENS",
    "LLAMA3_PATTERN",
    "LLAMA3_SPECIAL_TOKENS",
    "LONG_PIECE",
    "ROLE_WORDS",
    "Tokenizer",
    "TokenizerError",
    "cache_dir",
    "convert_builtin",
    "describe_backend",
    "fingerprint_of",
    "llama3_model_file",
    "load_tokenizer",
]
