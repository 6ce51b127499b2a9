"""Tokenizers: the built-in Llama-3 tokenizer and any Hugging Face tokenizer.

Why a package: loading a tokenizer for the pipeline is several jobs, one module each.
``llama3`` fixes what decides ids in the Llama-3 format; ``splintr_backend`` reads Meta's
``tokenizer.model`` (``ModelSource``: a regular file, hashed once per load) and builds the one
engine of the built-in tokenizer over it; ``cache`` converts the model file to a Hugging Face
tokenizer once per machine and checks the cached files on every load (``meta`` says what is
checked, ``files`` how a cached file is read); ``fingerprint`` hashes what decides ids;
``boundaries`` finds where a text can be cut without changing the ids before the cut; ``wrapper``
is the ``Tokenizer`` the pipeline uses (text-only encoding, control-token ids); ``loader`` turns a
spec into one, cached per process, and is the one place the encode path is chosen. Import the
public names from here.
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
from sftdata.tokenizer.wrapper import Tokenizer

_convert_builtin = convert_builtin  # the name the tests and older callers import

__all__ = [
    "BUILTIN_LLAMA3",
    "CONTROL_TOKENS",
    "LLAMA3_PATTERN",
    "LLAMA3_SPECIAL_TOKENS",
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
