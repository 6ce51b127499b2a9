"""What the Llama-3 format fixes about a tokenizer, and where Meta's own BPE file comes from.

Why a module of its own: the pre-tokenizer pattern, the 256 special-token names and the control
tokens decide token ids. The conversion to Hugging Face, the tiktoken backend and the wrapper all
read them from here, so the two encoders cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

from sftdata.errors import SftdataError

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


class TokenizerError(SftdataError):
    """A tokenizer could not be loaded or lacks what the Llama-3 format needs."""


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
