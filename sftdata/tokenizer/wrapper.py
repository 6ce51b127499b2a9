"""The ``Tokenizer`` the pipeline uses: text-only encoding and the Llama-3 control-token ids.

Why a wrapper: a plain ``PreTrainedTokenizerFast`` does not give what the pipeline needs.
(1) Content must be encoded as *text only*: ``<|eot_id|>`` typed by a user must never become the
control token, so every text segment goes through an encoder that ignores special tokens.
(2) A fingerprint that changes whenever ids could change, so caches and shards are never reused
with the wrong tokenizer. (3) A light start: the run path needs neither transformers nor, for the
built-in tokenizer, the 17 MB ``tokenizer.json``; those load only when used.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from functools import cached_property
from typing import Any

from sftdata.tokenizer.fingerprint import describe_backend
from sftdata.tokenizer.llama3 import CONTROL_TOKENS, TokenizerError
from sftdata.tokenizer.splintr_backend import (
    ModelSource,
    build_splintr,
    make_splintr_bytes_encoder,
    make_splintr_encoder,
)

_I32 = next(code for code in "ilq" if array(code).itemsize == 4)  # the array code of a C int32


class Tokenizer:
    """A loaded tokenizer with text-only encoding and the Llama-3 control-token ids.

    Ids, fingerprint and special tokens come from ``meta`` (a small cached description, see
    ``describe_backend``; made from the backend when not given). With ``model`` (the built-in
    tokenizer's ``ModelSource``) text is encoded by splintr over its ranks (built on first use);
    without it by the Hugging Face backend. The backend (``backend_loader``) and the
    transformers object (``hf_loader``) load lazily, for training and parity checks.
    ``private_backend``: the backend is ours alone and may be switched to text-only mode in place
    (otherwise it is shared with a transformers object and copied first).
    """

    def __init__(self, spec: str, backend_loader: Callable[[], Any], hf_loader: Callable[[], Any] | None = None,
                 pad_token_id: int | None = None, meta: dict | None = None, private_backend: bool = False,
                 model: ModelSource | None = None) -> None:
        self.spec = spec
        self.encoder = "hf" if model is None else "splintr"
        self._model = model
        self._backend_loader = backend_loader
        self._backend = None
        self._text_backend_obj = None
        self._private_backend = private_backend
        self._engine_obj: Any = None
        self._hf_loader = hf_loader
        self._hf = None
        self.meta = meta or describe_backend(self.backend)
        self.fingerprint: str = self.meta["fingerprint"]
        ids = self.meta["ids"]
        missing = [t for t in CONTROL_TOKENS if ids.get(t) is None]
        if missing:
            raise TokenizerError(f"tokenizer {spec!r} lacks the Llama-3 control tokens {', '.join(missing)}")
        self.bos_id: int = ids["<|begin_of_text|>"]
        self.start_header_id: int = ids["<|start_header_id|>"]
        self.end_header_id: int = ids["<|end_header_id|>"]
        self.eot_id: int = ids["<|eot_id|>"]
        self.eom_id: int | None = ids.get("<|eom_id|>")
        self.python_tag_id: int | None = ids.get("<|python_tag|>")
        pad = pad_token_id if pad_token_id is not None else ids.get("<|finetune_right_pad_id|>")
        self.pad_id: int = pad if pad is not None else self.eot_id
        self.vocab_size: int = self.meta["vocab_size"]
        self._special_names = {int(i): name for i, name in self.meta["special_tokens"].items()}
        self._special_by_name = {name: i for i, name in self._special_names.items()}
        self.special_ids: frozenset[int] = frozenset(self._special_names)
        # ids of the role names, decodable without loading the ranks (the audit decodes only these)
        self._common = {int(i): bytes.fromhex(b) for i, b in self.meta.get("common_tokens", {}).items()}

    @property
    def engine(self) -> Any:
        """The splintr engine of the built-in tokenizer (built on first use); None for others."""
        if self._engine_obj is None and self._model is not None:
            self._engine_obj = build_splintr(self._model)
        return self._engine_obj

    @property
    def cuts_at_boundaries(self) -> bool:
        """Whether ``boundaries.safe_cut`` applies: the Llama-3 pattern is the engine's (not true of
        an arbitrary Hugging Face pre-tokenizer)."""
        return self._model is not None

    @property
    def max_token_bytes(self) -> int | None:
        """The byte length of the longest ordinary token of the built-in tokenizer (read from its
        model file); None for others."""
        return self._model.max_token_bytes if self._model is not None else None

    @cached_property
    def encode_text(self) -> Callable[[str], list[int]]:
        """``encode_text(text) -> ids``: text only, no special-token parsing, no BOS.

        Built on first access (the audit never needs the engine) and then stored on the instance,
        so the per-piece hot path is one plain call.
        """
        if self._model is None:
            return self._hf_encode
        return make_splintr_encoder(self.engine)

    @cached_property
    def encode_text_bytes(self) -> Callable[[str], bytes]:
        """``encode_text`` with the ids as machine-order int32 bytes (``numpy.frombuffer(b, int32)``).

        splintr makes these bytes itself (no Python int per token); the Hugging Face lists are
        packed with ``array``.
        """
        if self._model is not None:
            return make_splintr_bytes_encoder(self.engine)
        encode = self.encode_text

        def packed(text: str) -> bytes:
            return array(_I32, encode(text)).tobytes()

        return packed

    def _hf_encode(self, text: str) -> list[int]:
        return self._text_backend.encode(text, add_special_tokens=False).ids

    @property
    def header_newline_ids(self) -> list[int]:
        """The ids of the ``\n\n`` that follows every header."""
        ids = self.meta.get("header_newline_ids")
        return list(ids) if ids is not None else self.encode_text("\n\n")

    @property
    def backend(self) -> Any:
        """The ``tokenizers.Tokenizer`` (loaded on first use)."""
        if self._backend is None:
            self._backend = self._backend_loader()
        return self._backend

    @property
    def _text_backend(self) -> Any:
        """A backend with special-token matching switched off: text that looks like a special
        token stays text. A backend shared with a transformers object is copied first."""
        if self._text_backend_obj is None:
            if self._private_backend:
                tb = self.backend
            else:
                from tokenizers import Tokenizer as _Backend

                tb = _Backend.from_str(self.backend.to_str())
            tb.encode_special_tokens = True
            self._text_backend_obj = tb
        return self._text_backend_obj

    @property
    def hf(self) -> Any:
        """The transformers ``PreTrainedTokenizerFast`` (loaded on first use)."""
        if self._hf is None:
            self._hf = self._hf_loader()
        return self._hf

    def token_id(self, token: str) -> int | None:
        if token in self._special_by_name:
            return self._special_by_name[token]
        return self.backend.token_to_id(token)

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        if self._model is not None:
            return [self.encode_text(t) for t in texts]
        return [e.ids for e in self._text_backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        if self._model is None:
            return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)
        out, run = [], []
        for i in ids:  # the engine knows the ordinary tokens; special ones come from the description
            i = int(i)
            name = self._special_names.get(i)
            if name is None:
                run.append(i)
                continue
            if run:
                out.append(self._decode_run(run))
                run = []
            out.append(name.encode())
        if run:
            out.append(self._decode_run(run))
        return b"".join(out).decode("utf-8", errors="replace")

    def _decode_run(self, ids: list[int]) -> bytes:
        common = self._common
        if all(i in common for i in ids):
            return b"".join(common[i] for i in ids)
        return bytes(self.engine.decode_bytes(ids))

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "fingerprint": self.fingerprint,
            "encoder": self.encoder,
            "vocab_size": self.vocab_size,
        }
