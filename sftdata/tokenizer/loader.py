"""``load_tokenizer``: from a spec (``builtin:llama3``, a folder, a hub id) to a ``Tokenizer``.

Why one entry point, cached per process: the runner, the forked workers, the audit and the
trainer must all see the same object for the same spec (loading costs a second or more). It is
also the one place the encode path is chosen, by the kind of tokenizer alone: splintr over Meta's
ranks for ``builtin:llama3``, the Hugging Face tokenizer for every other. The ids do not depend on
the engine (``tests/tokenizer/test_bpe_engines.py``), so nothing else chooses one.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Any

from sftdata.tokenizer.cache import CONVERSION_FILES, checked_cache, load_conversion
from sftdata.tokenizer.fingerprint import fingerprint_of
from sftdata.tokenizer.llama3 import BUILTIN_LLAMA3, TokenizerError, llama3_model_file
from sftdata.tokenizer.splintr_backend import ModelSource
from sftdata.tokenizer.wrapper import Tokenizer

# What a hub id looks like ("name" or "owner/name"); anything else is a local folder.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def load_tokenizer(spec: str = BUILTIN_LLAMA3) -> Tokenizer:
    """Load ``builtin:llama3``, a local tokenizer folder, or a hub id (cached per process)."""
    return _load_tokenizer(spec)


@lru_cache(maxsize=8)
def _load_tokenizer(spec: str) -> Tokenizer:
    if spec == BUILTIN_LLAMA3:
        return _load_builtin()
    return _load_hf(spec)


def _load_builtin() -> Tokenizer:
    source = ModelSource(llama3_model_file())
    folder, meta = checked_cache(source)

    def checked(backend: Any, what: str) -> Any:
        """``backend`` if it is the conversion the description vouches for (the fingerprint is
        recomputed: whoever edited tokenizer.json and its recorded sha256 together is caught here)."""
        if fingerprint_of(backend) != meta["fingerprint"]:
            raise TokenizerError(f"{folder}: the {what} changed after its check (its fingerprint differs); "
                                 "run again to have it made anew")
        return backend

    def backend_loader() -> Any:
        import hashlib

        from tokenizers import Tokenizer as _Backend

        data = load_conversion(folder)
        if data is None or hashlib.sha256(data).hexdigest() != meta["tokenizer_json_sha256"]:
            raise TokenizerError(f"{folder / CONVERSION_FILES['tokenizer_json']} changed after its check; run again")
        return checked(_Backend.from_str(data.decode("utf-8")), "tokenizer.json")

    def hf_loader() -> Any:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(folder))
        checked(hf.backend_tokenizer, "conversion")
        return hf

    return Tokenizer(BUILTIN_LLAMA3, backend_loader, hf_loader, meta=meta, private_backend=True, model=source)


def _local_folder_problem(spec: str) -> str | None:
    """Why ``spec`` names no usable local tokenizer folder; None when it is a folder or a hub id."""
    if os.path.isdir(spec):
        return None
    if os.path.lexists(spec):
        return f"--tokenizer {spec}: not a folder (a tokenizer is a folder holding tokenizer.json)"
    if not _HUB_ID.fullmatch(spec) or spec.startswith((".", "~")):
        return f"--tokenizer {spec}: no such tokenizer folder"
    return None


def _load_hf(spec: str) -> Tokenizer:
    problem = _local_folder_problem(spec)
    if problem:
        raise TokenizerError(problem)
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(spec)
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises, one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TokenizerError(f"cannot load tokenizer {spec!r}: {first}") from None
    if not getattr(hf, "is_fast", False):
        raise TokenizerError(f"tokenizer {spec!r} is not a fast tokenizer")
    return Tokenizer(spec, lambda: hf.backend_tokenizer, lambda: hf, hf.pad_token_id)
