"""The independent oracles the built-in tokenizer's ids are compared with (tests only).

tiktoken over the ranks of Meta's ``tokenizer.model`` (decoded by tiktoken's own loader), and the
Hugging Face conversion loaded as any other tokenizer folder. Neither shares code with the
splintr engine the pipeline runs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sftdata.tokenizer import LLAMA3_PATTERN, Tokenizer, convert_builtin, llama3_model_file, load_tokenizer


@lru_cache(maxsize=1)
def tiktoken_encoding() -> Any:
    """tiktoken's ``Encoding`` over Meta's ranks and the Llama-3 pattern, no special tokens."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(llama3_model_file()))
    return tiktoken.Encoding(name="oracle-llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens={})


def tiktoken_ids(text: str) -> list[int]:
    """tiktoken's ids for ``text`` (its ``encode_ordinary`` repairs lone surrogates itself)."""
    return tiktoken_encoding().encode_ordinary(text)


def hf_builtin() -> Tokenizer:
    """The built-in tokenizer's Hugging Face conversion, loaded as a tokenizer folder: the
    pipeline's Hugging Face encode path over the same vocabulary."""
    return load_tokenizer(str(convert_builtin()))
