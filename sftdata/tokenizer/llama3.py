"""What the Llama-3 format fixes about a tokenizer, and where Meta's own BPE file comes from.

Why a module of its own: the pre-tokenizer pattern, the 256 special-token names and the control
tokens decide token ids. The conversion to Hugging Face, the splintr engine, the cache checks and
the wrapper all read them from here, so they cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

from sftdata.errors import UsageError

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

# The role names whose ids are cached as bytes, so the audit can decode headers without the ranks.
ROLE_WORDS = ("system", "user", "assistant", "ipython", "tool")

# The fingerprint of the Hugging Face conversion of each ``tokenizer.model`` released so far (by the
# file's sha256): a cached description must state this one. A model file not listed here has its
# conversion's fingerprint recomputed by every load instead (``sftdata.tokenizer.loader``).
KNOWN_FINGERPRINTS = {
    "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55":
        "sha256:13e3b0f4a48f32b67d897579619eaaad165b98eca7c49177a562d85c70fddb03",
}


def special_layout(n_ranks: int) -> dict[int, str]:
    """The special tokens' ids: the 256 names follow the ``n_ranks`` ordinary ranks, in order."""
    return {n_ranks + i: name for i, name in enumerate(LLAMA3_SPECIAL_TOKENS)}


class TokenizerError(UsageError):
    """A tokenizer could not be loaded or lacks what the Llama-3 format needs: the call names a
    tokenizer that cannot be used (exit 2)."""


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
