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
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

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

# tiktoken's BPE is quadratic in the length of one pre-token; a text containing a very long run
# (100k letters, spaces or symbols) goes to the Hugging Face encoder, which handles it in n log n.
_LONG_RUN = re.compile(r"\S{256,}|\s{256,}")


class TokenizerError(Exception):
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


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _convert_builtin() -> Path:
    """Convert Meta's BPE file to a Hugging Face fast tokenizer once and cache it on disk."""
    model_file = llama3_model_file()
    target = cache_dir() / "tokenizers" / f"llama3-{_file_sha256(model_file)[:16]}"
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


def fingerprint_of(hf_tokenizer: Any) -> str:
    """sha256 over what decides ids: vocabulary, merges, pre-tokenizer, added/special tokens."""
    state = json.loads(hf_tokenizer.backend_tokenizer.to_str())
    model = state.get("model", {})
    payload = {
        "model_type": model.get("type"),
        "vocab": model.get("vocab"),
        "merges": model.get("merges"),
        "pre_tokenizer": state.get("pre_tokenizer"),
        "normalizer": state.get("normalizer"),
        "added_tokens": sorted(
            (t["id"], t["content"], bool(t.get("special"))) for t in state.get("added_tokens", [])
        ),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Tokenizer:
    """A loaded tokenizer with text-only encoding and the Llama-3 control-token ids."""

    spec: str
    hf: Any
    fingerprint: str
    encoder: str  # "tiktoken" or "hf"
    _tiktoken: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        ids = {}
        missing = []
        for tok in CONTROL_TOKENS + ("<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"):
            tid = self.hf.convert_tokens_to_ids(tok)
            if tid is None or tid == self.hf.unk_token_id:
                missing.append(tok)
            ids[tok] = tid
        if any(t in missing for t in CONTROL_TOKENS):
            raise TokenizerError(
                f"tokenizer {self.spec!r} lacks the Llama-3 control tokens {', '.join(missing)}"
            )
        self.bos_id: int = ids["<|begin_of_text|>"]
        self.start_header_id: int = ids["<|start_header_id|>"]
        self.end_header_id: int = ids["<|end_header_id|>"]
        self.eot_id: int = ids["<|eot_id|>"]
        self.eom_id: int | None = ids.get("<|eom_id|>")
        self.python_tag_id: int | None = ids.get("<|python_tag|>")
        pad = self.hf.pad_token_id
        self.pad_id: int = pad if pad is not None else ids.get("<|finetune_right_pad_id|>") or self.eot_id
        self.vocab_size: int = len(self.hf)
        self.special_ids: frozenset[int] = frozenset(self.hf.all_special_ids) | frozenset(
            i for i in (t.get("id") for t in self._added_tokens() if t.get("special")) if i is not None
        )
        # Text that looks like a special token must stay text: a private copy of the backend with
        # special-token matching switched off (the shared `hf` object keeps its normal behaviour).
        from tokenizers import Tokenizer as _Backend

        self._backend = _Backend.from_str(self.hf.backend_tokenizer.to_str())
        self._backend.encode_special_tokens = True

    def _added_tokens(self) -> list[dict]:
        return json.loads(self.hf.backend_tokenizer.to_str()).get("added_tokens", [])

    def encode_text(self, text: str) -> list[int]:
        """Ids of ``text`` with no special-token parsing and no BOS."""
        if self._tiktoken is not None and not (len(text) >= 256 and _LONG_RUN.search(text)):
            return self._tiktoken.encode_ordinary(text)
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        if self._tiktoken is not None:
            return [self.encode_text(t) for t in texts]
        return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "fingerprint": self.fingerprint,
            "encoder": self.encoder,
            "vocab_size": self.vocab_size,
        }


def _tiktoken_encoding(model_file: Path) -> Any:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(model_file))
    return tiktoken.Encoding(name="sftdata-llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens={})


@lru_cache(maxsize=8)
def load_tokenizer(spec: str = BUILTIN_LLAMA3, encoder: str = "auto") -> Tokenizer:
    """Load ``builtin:llama3``, a local tokenizer directory, or a hub id.

    ``encoder``: ``auto`` (tiktoken for the built-in tokenizer, else Hugging Face), ``hf`` or
    ``tiktoken`` (only valid for the built-in tokenizer: the ranks must be Meta's).
    """
    from transformers import AutoTokenizer

    if encoder not in ("auto", "hf", "tiktoken"):
        raise TokenizerError(f"unknown encoder {encoder!r}; expected auto, hf or tiktoken")
    if spec == BUILTIN_LLAMA3:
        path = _convert_builtin()
        hf = AutoTokenizer.from_pretrained(str(path))
        use_tiktoken = encoder in ("auto", "tiktoken")
        tk = _tiktoken_encoding(llama3_model_file()) if use_tiktoken else None
        return Tokenizer(spec, hf, fingerprint_of(hf), "tiktoken" if tk else "hf", tk)
    if encoder == "tiktoken":
        raise TokenizerError("the tiktoken encoder is only available for builtin:llama3")
    try:
        hf = AutoTokenizer.from_pretrained(spec)
    except Exception as exc:
        raise TokenizerError(f"cannot load tokenizer {spec!r}: {exc}") from exc
    if not getattr(hf, "is_fast", False):
        raise TokenizerError(f"tokenizer {spec!r} is not a fast tokenizer")
    return Tokenizer(spec, hf, fingerprint_of(hf), "hf")
