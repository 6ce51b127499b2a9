"""Tokenizers: the built-in Llama-3 tokenizer, any Hugging Face tokenizer, and a fast encoder.

Why a wrapper: the pipeline needs three things a plain ``PreTrainedTokenizerFast`` does not give
directly. (1) Content must be encoded as *text only*: ``<|eot_id|>`` typed by a user must never
become the control token, so every text segment goes through an encoder that ignores special
tokens. (2) A fingerprint that changes whenever ids could change (vocabulary, merges, special
tokens), so caches and shards are never reused with the wrong tokenizer. (3) Speed: for Meta's
own BPE ranks, ``tiktoken`` gives the same ids faster than ``tokenizers``; any other tokenizer
falls back to the Hugging Face path.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from sftdata.errors import SftdataError
from sftdata.hashing import file_sha256

BUILTIN_LLAMA3 = "builtin:llama3"

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The Llama-3.1 / 3.2 special tokens as the Hugging Face checkpoints name them (ids 128000-128255).
_NAMED_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
LLAMA3_SPECIAL_TOKENS = _NAMED_SPECIALS + [f"<|reserved_special_token_{i}|>" for i in range(3, 248)]

# Llama-3 chat control tokens the templates need; a tokenizer without them cannot render the format.
CONTROL_TOKENS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

# tiktoken's BPE is quadratic in the length of one pre-token; a text containing a very long
# pre-token (100k letters, spaces or symbols in a row) goes to the Hugging Face encoder, which
# handles it in n log n. Runs are measured like the Llama-3 pre-tokenizer cuts them (digits come
# in threes), so long CJK paragraphs with punctuation stay on the fast path.
LONG_PIECE = 4096
ROLE_WORDS = ("system", "user", "assistant", "ipython", "tool")
_LONG_RUN = rf"\p{{L}}{{{LONG_PIECE},}}|[^\s\p{{L}}\p{{N}}]{{{LONG_PIECE},}}|\s{{{LONG_PIECE},}}"


class TokenizerError(SftdataError):
    """A tokenizer could not be loaded or lacks what the Llama-3 format needs."""


def cache_dir() -> Path:
    base = os.environ.get("SFTDATA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sftdata"
    )
    return Path(base)


def llama3_model_file() -> Path:
    """Meta's ``tokenizer.model`` (tiktoken BPE ranks) as shipped in the ``llama-models`` package."""
    try:
        import llama_models
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise TokenizerError("the built-in tokenizer needs `pip install llama-models`") from exc
    path = Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"
    if not path.is_file():
        raise TokenizerError(f"llama-models does not ship {path}")
    return path


def _convert_builtin() -> Path:
    """Convert Meta's BPE file to a Hugging Face fast tokenizer once and cache it on disk."""
    model_file = llama3_model_file()
    target = cache_dir() / "tokenizers" / f"llama3-{file_sha256(model_file)[:16]}"
    if (target / "tokenizer.json").is_file():
        return target
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(
        vocab_file=str(model_file), pattern=LLAMA3_PATTERN, extra_special_tokens=LLAMA3_SPECIAL_TOKENS
    ).converted()
    # Like Meta's checkpoints: BOS is added by `add_special_tokens=True`, never by our pipeline.
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", backend.token_to_id("<|begin_of_text|>"))],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
    )
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race; theirs is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fingerprint_of(tok: Any) -> str:
    """sha256 over what decides ids: vocabulary, merges, pre-tokenizer, normalizer, added tokens.

    Accepts a ``tokenizers.Tokenizer`` or a transformers fast tokenizer.
    """
    import orjson

    backend = getattr(tok, "backend_tokenizer", tok)
    state = orjson.loads(backend.to_str())
    model = state.get("model", {})
    payload = {
        "model_type": model.get("type"),
        "vocab": model.get("vocab"),
        "merges": model.get("merges"),
        "pre_tokenizer": state.get("pre_tokenizer"),
        "normalizer": state.get("normalizer"),
        "added_tokens": sorted(
            [t["id"], t["content"], bool(t.get("special"))] for t in state.get("added_tokens", [])
        ),
    }
    return "sha256:" + hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def describe_backend(backend: Any) -> dict:
    """What the pipeline needs from a tokenizer, cacheable as JSON beside a converted tokenizer."""
    names = CONTROL_TOKENS + ("<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>")
    added = backend.get_added_tokens_decoder()
    return {
        "fingerprint": fingerprint_of(backend),
        "ids": {name: backend.token_to_id(name) for name in names},
        "vocab_size": backend.get_vocab_size(with_added_tokens=True),
        "special_tokens": {str(i): t.content for i, t in added.items() if t.special},
    }


class Tokenizer:
    """A loaded tokenizer with text-only encoding and the Llama-3 control-token ids.

    The run path needs neither transformers (seconds of imports per process) nor, for the
    built-in tokenizer, the 17 MB ``tokenizer.json``: ids, fingerprint and special tokens come
    from a small cached description, and encoding from tiktoken. The Hugging Face backend and
    the transformers object load lazily, for long-run fallbacks, training and parity checks.
    """

    def __init__(self, spec: str, backend_loader: Any, encoder: str, tiktoken_enc: Any = None,
                 hf_loader: Any = None, pad_token_id: int | None = None, meta: dict | None = None,
                 private_backend: bool = False) -> None:
        self.spec = spec
        self.encoder = encoder
        self._backend_loader = backend_loader
        self._backend = None
        self._text_backend_obj = None
        self._private_backend = private_backend
        self._tiktoken = tiktoken_enc
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
        self.encode_text = self._first_encode

    def _first_encode(self, text: str) -> list[int]:
        # the encoder (for tiktoken, a 0.2 s build) is made on first use: the audit never needs it
        self.encode_text = self._make_encoder()
        return self.encode_text(text)

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

    def _make_encoder(self):
        """``encode_text(text) -> ids``: text only, no special-token parsing, no BOS.

        Built once as a closure: this is the per-piece hot path, so it calls tiktoken's core
        directly and only looks for long runs in long texts.
        """
        def hf_encode(text: str) -> list[int]:
            return self._text_backend.encode(text, add_special_tokens=False).ids

        if self._tiktoken is None:
            return hf_encode
        core = self._tiktoken.encoding._core_bpe.encode_ordinary
        careful = self._tiktoken.encoding.encode_ordinary
        import regex  # only encoding needs it; the audit and inspect load tokenizers too

        long_run = regex.compile(_LONG_RUN).search

        def tiktoken_encode(text: str) -> list[int]:
            if len(text) >= LONG_PIECE and long_run(text):
                return hf_encode(text)
            try:
                return core(text)
            except UnicodeEncodeError:  # lone surrogates: tiktoken's own wrapper repairs them
                return careful(text)

        return tiktoken_encode

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        if self._tiktoken is not None:
            return [self.encode_text(t) for t in texts]
        return [e.ids for e in self._text_backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        if self._tiktoken is None:
            return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)
        out, run = [], []
        for i in ids:  # tiktoken knows the ordinary tokens; special ones come from the description
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
        return self._tiktoken.decode_bytes(ids)

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "fingerprint": self.fingerprint,
            "encoder": self.encoder,
            "vocab_size": self.vocab_size,
        }


class _Tiktoken:
    """tiktoken over Meta's ranks, built on first use. The decoded ranks are cached as a pickle
    (base64 decoding costs 0.5 s); decoding works from the ranks alone, without the encoder."""

    def __init__(self, model_file: Path, cache: Path | None = None) -> None:
        self.model_file, self.cache = model_file, cache
        self._ranks: dict[bytes, int] | None = None
        self._encoding: Any = None
        self._bytes_of: dict[int, bytes] | None = None

    @property
    def ranks(self) -> dict[bytes, int]:
        if self._ranks is None:
            import pickle

            pkl = self.cache / "sftdata-ranks.pkl" if self.cache else None
            if pkl is not None and pkl.is_file():
                try:
                    self._ranks = pickle.loads(pkl.read_bytes())
                except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
                    self._ranks = None
            if self._ranks is None:
                from tiktoken.load import load_tiktoken_bpe

                self._ranks = load_tiktoken_bpe(str(self.model_file))
                if pkl is not None:
                    tmp = pkl.with_name(pkl.name + f".tmp{os.getpid()}")
                    tmp.write_bytes(pickle.dumps(self._ranks, protocol=pickle.HIGHEST_PROTOCOL))
                    os.replace(tmp, pkl)
        return self._ranks

    @property
    def encoding(self) -> Any:
        if self._encoding is None:
            import tiktoken

            self._encoding = tiktoken.Encoding(name="sftdata-llama3", pat_str=LLAMA3_PATTERN,
                                               mergeable_ranks=self.ranks, special_tokens={})
        return self._encoding

    def decode_bytes(self, ids: list[int]) -> bytes:
        if self._bytes_of is None:
            self._bytes_of = {i: b for b, i in self.ranks.items()}
        return b"".join(self._bytes_of[i] for i in ids)


def load_tokenizer(spec: str = BUILTIN_LLAMA3, encoder: str = "auto") -> Tokenizer:
    """Load ``builtin:llama3``, a local tokenizer directory, or a hub id (cached per process).

    ``encoder``: ``auto`` (tiktoken for the built-in tokenizer, else Hugging Face), ``hf`` or
    ``tiktoken`` (only valid for the built-in tokenizer: the ranks must be Meta's).
    """
    return _load_tokenizer(spec, encoder)


def _file_backend(path: Path) -> Any:
    # imported on first use: the audit loads the built-in tokenizer but never encodes with it
    from tokenizers import Tokenizer as _Backend

    return _Backend.from_file(str(path))


@lru_cache(maxsize=8)
def _load_tokenizer(spec: str, encoder: str) -> Tokenizer:
    if encoder not in ("auto", "hf", "tiktoken"):
        raise TokenizerError(f"unknown encoder {encoder!r}; expected auto, hf or tiktoken")
    if spec == BUILTIN_LLAMA3:
        path = _convert_builtin()
        tk = _Tiktoken(llama3_model_file(), path) if encoder in ("auto", "tiktoken") else None

        def loader() -> Any:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(path))

        # The description (fingerprint, control ids, special tokens) of the cached conversion is
        # stored beside it: hashing 128k tokens and 280k merges costs a second per process.
        meta_file = path / "sftdata-meta-v3.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
        tok = Tokenizer(spec, lambda: _file_backend(path / "tokenizer.json"),
                        "tiktoken" if tk else "hf", tk, loader, meta=meta, private_backend=True)
        if meta is None:
            tok.meta["header_newline_ids"] = tok.encode_text("\n\n")
            tok.meta["common_tokens"] = {str(i): tok._tiktoken.decode_bytes([i]).hex() for role in ROLE_WORDS
                                         for i in tok.encode_text(role)}
            tmp = meta_file.with_name(meta_file.name + f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(tok.meta))
            os.replace(tmp, meta_file)
        return tok
    if encoder == "tiktoken":
        raise TokenizerError("the tiktoken encoder is only available for builtin:llama3")
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(spec)
    except Exception as exc:
        raise TokenizerError(f"cannot load tokenizer {spec!r}: {exc}") from exc
    if not getattr(hf, "is_fast", False):
        raise TokenizerError(f"tokenizer {spec!r} is not a fast tokenizer")
    tok = Tokenizer(spec, lambda: hf.backend_tokenizer, "hf", None, lambda: hf, hf.pad_token_id)
    tok._hf = hf
    return tok
