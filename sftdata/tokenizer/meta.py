"""The cached description of the built-in tokenizer, and the checks that tie it to its source.

Why: the description (fingerprint, control-token ids, the ids of the header's ``\\n\\n``, the bytes of
the role names' tokens) saves every run parsing the 17 MB conversion; but a run must not trust a
file anyone with write access to the cache could have edited. So every load checks the
description against what it can recompute cheaply from the model file's own bytes
(``ModelSource``, hashed by the same load):

- its shape and types, field by field (a truncated or garbage file is damage, never a traceback);
- ``source_sha256`` is the model file's; ``tokenizer_json_sha256`` and ``tokenizer_config_sha256``
  are the bytes of the two conversion files beside it (each cached file tied to the source and
  to each other: a swapped vocabulary in ``tokenizer.json`` is a changed sha256);
- the control-token ids, the special tokens and the vocabulary size are the Llama-3 layout after
  the model file's ranks (``special_layout``);
- the ids of the header's ``\\n\\n`` and of the role names (each one pre-token) are the model file's,
  by the byte-pair merge over ranks looked up in the file itself (``ModelSource.bpe``);
- the fingerprint is the one ``KNOWN_FINGERPRINTS`` lists for the model file (an unlisted file's
  fingerprint is recomputed from the conversion by the loader instead).

``problem_of`` names the first check that fails; the caller rebuilds the description (and the
conversion when that is what disagrees), and refuses with one line if a fresh one still fails.
"""

from __future__ import annotations

import re
from typing import Any

from sftdata.tokenizer.fingerprint import describe_backend
from sftdata.tokenizer.llama3 import KNOWN_FINGERPRINTS, ROLE_WORDS, special_layout
from sftdata.tokenizer.splintr_backend import ModelSource

META_FILE = "sftdata-meta-v5.json"
_SHA = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_FIELDS = {"source_sha256": str, "tokenizer_json_sha256": str, "tokenizer_config_sha256": str, "fingerprint": str,
           "ids": dict, "vocab_size": int, "special_tokens": dict, "header_newline_ids": list,
           "common_tokens": dict}


def build_meta(backend: Any, engine: Any, source: ModelSource, file_sha256: dict[str, str]) -> dict:
    """The description of the conversion ``backend`` (see ``describe_backend``), plus what the run and
    the audit need without the engine, made with the engine over ``source``'s ranks, and the ties.
    The longest token's length is not kept: the run reads it from the model file itself."""
    meta = describe_backend(backend)
    encode = engine.encode_ordinary
    meta["header_newline_ids"] = encode("\n\n")
    meta["common_tokens"] = {str(i): engine.decode_bytes([i]).hex() for role in ROLE_WORDS for i in encode(role)}
    meta["source_sha256"] = source.sha256
    meta.update({f"{name}_sha256": sha for name, sha in file_sha256.items()})
    return meta


def _shape_problem(meta: Any) -> str | None:
    if not isinstance(meta, dict) or set(meta) != set(_FIELDS):
        return "not a description of this version (other fields)"
    bad = [k for k, kind in _FIELDS.items() if type(meta[k]) is not kind]
    if bad:
        return f"{', '.join(bad)}: wrong type"
    if not all(_SHA.fullmatch(meta[k]) for k in _FIELDS if k.endswith("_sha256")):
        return "a sha256 is not 64 hex digits"
    if not _FINGERPRINT.fullmatch(meta["fingerprint"]):
        return "the fingerprint is not sha256:<64 hex digits>"
    if not all(type(i) is int for i in meta["header_newline_ids"]):
        return "header_newline_ids: not integers"
    if not all(isinstance(v, str) and _HEX.fullmatch(v) and k.isdigit() for k, v in meta["common_tokens"].items()):
        return "common_tokens: not id -> hex bytes"
    return None


def _layout_problem(meta: dict, source: ModelSource) -> str | None:
    specials = special_layout(source.n_ranks)
    if meta["special_tokens"] != {str(i): name for i, name in specials.items()}:
        return "special_tokens differ from the model file's layout"
    by_name = {name: i for i, name in specials.items()}
    if any(by_name.get(name) != i for name, i in meta["ids"].items()) or not meta["ids"]:
        return "control-token ids differ from the model file's layout"
    if meta["vocab_size"] != source.n_ranks + len(specials):
        return f"vocab_size {meta['vocab_size']} is not the model file's {source.n_ranks + len(specials)}"
    return None


def _bpe_problem(meta: dict, source: ModelSource) -> str | None:
    if meta["header_newline_ids"] != [rank for rank, _ in source.bpe(b"\n\n")]:
        return "header_newline_ids are not the model file's ids of \\n\\n"
    common = {str(rank): part.hex() for role in ROLE_WORDS for rank, part in source.bpe(role.encode())}
    if meta["common_tokens"] != common:
        return "common_tokens are not the model file's tokens of the role names"
    return None


def problem_of(meta: Any, source: ModelSource, file_sha256: dict[str, str]) -> str | None:
    """The first reason ``meta`` cannot be trusted for ``source`` and the conversion files whose
    sha256 are ``file_sha256`` ({"tokenizer_json": ..., "tokenizer_config": ...}); None if none."""
    problem = _shape_problem(meta)
    if problem:
        return problem
    if meta["source_sha256"] != source.sha256:
        return "made from another model file"
    for name, sha in file_sha256.items():
        if meta[f"{name}_sha256"] != sha:
            return f"{name}_sha256 is not the sha256 of that file beside it"
    known = KNOWN_FINGERPRINTS.get(source.sha256)
    if known is not None and meta["fingerprint"] != known:
        return "the fingerprint is not the model file's"
    return _layout_problem(meta, source) or _bpe_problem(meta, source)
