"""The tokenizer fingerprint and the small description the pipeline keeps of a tokenizer.

Why: caches, shards and trained models must never be reused with a tokenizer that gives other
ids. The fingerprint hashes exactly what decides ids (vocabulary, merges, pre-tokenizer,
normalizer, added tokens) and nothing cosmetic, so it changes when and only when ids could.
The description holds what a run needs up front, so it can be cached as JSON and a run does not
have to parse the 17 MB ``tokenizer.json`` or hash 128k tokens per process.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sftdata.tokenizer.llama3 import CONTROL_TOKENS


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
