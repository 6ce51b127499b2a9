"""``load_tokenizer``: from a spec (``builtin:llama3``, a folder, a hub id) to a ``Tokenizer``.

Why one entry point, cached per process: the runner, the forked workers, the audit and the
trainer must all see the same object for the same spec (loading costs a second or more), and
the choice of encoder (tiktoken or Hugging Face) must never change the description a run
records: the built-in tokenizer's description is made the same way whichever encoder asks.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sftdata.storage.hashing import file_sha256
from sftdata.tokenizer.cache import build_meta, convert_builtin, read_meta, write_meta
from sftdata.tokenizer.llama3 import BUILTIN_LLAMA3, TokenizerError, llama3_model_file
from sftdata.tokenizer.splintr_backend import splintr_available
from sftdata.tokenizer.tiktoken_backend import TiktokenBackend
from sftdata.tokenizer.wrapper import Tokenizer

ENCODERS = ("auto", "hf", "tiktoken", "splintr")


def load_tokenizer(spec: str = BUILTIN_LLAMA3, encoder: str = "auto") -> Tokenizer:
    """Load ``builtin:llama3``, a local tokenizer directory, or a hub id (cached per process).

    ``encoder``: ``auto`` (for the built-in tokenizer splintr when installed, else tiktoken; Hugging
    Face for any other), ``hf``, ``tiktoken`` or ``splintr`` (the last two only for the built-in
    tokenizer: the ranks must be Meta's). The engines give the same ids; only speed differs.
    """
    return _load_tokenizer(spec, encoder)


def _file_backend(path: Path) -> Any:
    # imported on first use: the audit loads the built-in tokenizer but never encodes with it
    from tokenizers import Tokenizer as _Backend

    return _Backend.from_file(str(path))


@lru_cache(maxsize=8)
def _load_tokenizer(spec: str, encoder: str) -> Tokenizer:
    if encoder not in ENCODERS:
        raise TokenizerError(f"unknown encoder {encoder!r}; expected {', '.join(ENCODERS)}")
    if spec == BUILTIN_LLAMA3:
        return _load_builtin(encoder)
    if encoder in ("tiktoken", "splintr"):
        raise TokenizerError(f"the {encoder} encoder is only available for builtin:llama3")
    return _load_hf(spec)


def _load_builtin(encoder: str) -> Tokenizer:
    model_file = llama3_model_file()
    model_sha256 = file_sha256(model_file)
    folder = convert_builtin(model_file, model_sha256)
    tiktoken_enc = TiktokenBackend(model_file, folder, model_sha256)  # reads nothing until used
    backend: list[Any] = []  # loaded at most once, here or on first use

    def backend_loader() -> Any:
        if not backend:
            backend.append(_file_backend(folder / "tokenizer.json"))
        return backend[0]

    def hf_loader() -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder))

    # The description (fingerprint, control ids, special tokens) of the cached conversion is
    # stored beside it: hashing 128k tokens and 280k merges costs a second per process.
    meta = read_meta(folder)
    if meta is None:
        meta = build_meta(backend_loader(), tiktoken_enc)
        write_meta(folder, meta)
    if encoder == "hf":
        return Tokenizer(BUILTIN_LLAMA3, backend_loader, "hf", None, hf_loader, meta=meta,
                         private_backend=True)
    if encoder == "auto":
        encoder = "splintr" if splintr_available() else "tiktoken"
    elif encoder == "splintr" and not splintr_available():
        raise TokenizerError("encoder splintr asked for, but the splintr-rs package is not installed")
    return Tokenizer(BUILTIN_LLAMA3, backend_loader, encoder, tiktoken_enc, hf_loader, meta=meta,
                     private_backend=True)


def _load_hf(spec: str) -> Tokenizer:
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(spec)
    except Exception as exc:
        raise TokenizerError(f"cannot load tokenizer {spec!r}: {exc}") from exc
    if not getattr(hf, "is_fast", False):
        raise TokenizerError(f"tokenizer {spec!r} is not a fast tokenizer")
    return Tokenizer(spec, lambda: hf.backend_tokenizer, "hf", None, lambda: hf, hf.pad_token_id)
