"""The on-disk cache of the built-in tokenizer: the Hugging Face conversion and its description.

Why: converting Meta's ``tokenizer.model`` to a Hugging Face fast tokenizer takes seconds, and
describing it (hashing 128k tokens and 280k merges for the fingerprint) a second more, so both
are done once per machine and kept under ``~/.cache/sftdata`` (``$SFTDATA_CACHE``). The folder
is named after the sha256 of the model file, so a new ``llama-models`` release gets a new
folder and a stale conversion is never used. Layout of ``tokenizers/llama3-<sha256[:16]>/``:
``tokenizer.json`` and ``tokenizer_config.json`` (the conversion), ``sftdata-meta-v4.json``
(the description) and ``sftdata-ranks-v2.bin`` (the decoded ranks, see ``ranks_file``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sftdata.storage.hashing import file_sha256
from sftdata.tokenizer.fingerprint import describe_backend
from sftdata.tokenizer.llama3 import LLAMA3_PATTERN, LLAMA3_SPECIAL_TOKENS, ROLE_WORDS, llama3_model_file
from sftdata.tokenizer.tiktoken_backend import TiktokenBackend

META_FILE = "sftdata-meta-v4.json"


def cache_dir() -> Path:
    """``$SFTDATA_CACHE``, else ``sftdata`` under ``$XDG_CACHE_HOME`` (default ``~/.cache``)."""
    base = os.environ.get("SFTDATA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sftdata"
    )
    return Path(base)


def convert_builtin(model_file: Path | None = None, model_sha256: str | None = None) -> Path:
    """The cached Hugging Face conversion of Meta's BPE file (made on first use)."""
    model_file = model_file or llama3_model_file()
    model_sha256 = model_sha256 or file_sha256(model_file)
    target = cache_dir() / "tokenizers" / f"llama3-{model_sha256[:16]}"
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
        import shutil  # here only: it imports bz2, lzma and zlib, 10+ ms on every start

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_meta(folder: Path) -> dict | None:
    """The cached description of the conversion in ``folder``, or None when there is none yet."""
    meta_file = folder / META_FILE
    return json.loads(meta_file.read_text()) if meta_file.is_file() else None


def build_meta(backend: object, tiktoken_enc: TiktokenBackend) -> dict:
    """The description of the built-in tokenizer (see ``describe_backend``), plus what the run and
    the audit need without the ranks: the ids of the header's ``\n\n``, the bytes of the role
    names' ids and the longest token's byte length (the ``too_long`` pre-check). Made with
    tiktoken whichever encoder asked, so the file is the same."""
    meta = describe_backend(backend)
    encode = tiktoken_enc.encoding.encode_ordinary
    meta["header_newline_ids"] = encode("\n\n")
    meta["common_tokens"] = {str(i): tiktoken_enc.decode_bytes([i]).hex()
                             for role in ROLE_WORDS for i in encode(role)}
    meta["max_token_bytes"] = max(len(b) for b in tiktoken_enc.ranks)
    return meta


def write_meta(folder: Path, meta: dict) -> None:
    meta_file = folder / META_FILE
    tmp = meta_file.with_name(meta_file.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, meta_file)
