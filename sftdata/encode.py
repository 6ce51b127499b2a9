"""Tokenize rendered pieces and build response-only labels.

Labels are unshifted (the model shifts) and ``IGNORE_INDEX`` everywhere except the trained
pieces. Text pieces go through the tokenizer's text-only encoder, so content can never produce a
control token; control tokens come only from the renderer, by id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sftdata.constants import IGNORE_INDEX
from sftdata.records import Reject
from sftdata.templates import CONST, HEADER, HEADER_NEWLINE, SPECIAL, TEXT, TRAINED, TRAINED_SPECIAL, Piece
from sftdata.tokenizer import Tokenizer


@dataclass(slots=True)
class Encoded:
    input_ids: np.ndarray  # int32
    labels: np.ndarray  # int32
    trained: int
    truncated: bool = False


class PieceEncoder:
    """Turns pieces into ids and labels. ``truncation``: ``drop`` or ``truncate``.

    This loop runs once per piece (about 11 per record), around the BPE: the ids grow in a plain
    list (``list +=`` of the tokenizer's list copies pointers; an ``array`` converts every int),
    control-token ids, headers and constant pieces are looked up in one dict each, and the trained
    count comes from the spans instead of a pass over the labels.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int, truncation: str = "drop") -> None:
        if truncation not in ("drop", "truncate"):
            raise ValueError(f"unknown truncation {truncation!r}; expected drop or truncate")
        self.tok = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self._special: dict[str, int] = {}
        self._header: dict[object, list[int]] = {}
        self._const: dict[object, list[int]] = {}

    def _special_id(self, name: str) -> int:
        sid = self._special.get(name)
        if sid is None:
            sid = self.tok.token_id(name)
            if sid is None:  # the error an int array gave for a missing control token (its rejection message)
                raise TypeError("'NoneType' object cannot be interpreted as an integer")
            self._special[name] = sid
        return sid

    def _too_long_to_encode(self, pieces: list[Piece]) -> None:
        """Refuse, before tokenizing, text that cannot fit in ``max_length`` tokens.

        One token covers at most ``max_token_chars`` characters of text (128 for Llama-3: its
        longest token is 128 bytes, and a character is at least one byte), so more characters than
        ``max_token_chars * max_length`` can only be ``too_long``. Encoding a 60 MB record just to
        learn that cost gigabytes. Only with ``truncation: drop``: truncation needs the ids.
        """
        if sum([len(v) for _, v in pieces]) <= self.max_length:  # an upper bound (control-token names
            return  # counted too); a token holds at least one character: nothing to decide
        chars = sum(len(v) for k, v in pieces if k in (TEXT, TRAINED, CONST, HEADER))
        if chars <= self.max_length:
            return
        per_token = max_token_chars(self.tok)
        if per_token is not None and chars > per_token * self.max_length:
            raise Reject("too_long", f"{chars:,} characters of text: more than max_length {self.max_length} "
                         f"tokens can hold (at most {per_token} characters per token); refused before tokenizing")

    def _header_ids(self, role: object) -> list[int]:
        encode = self.tok.encode_text
        toks = self._header[role] = [self._special_id("<|start_header_id|>"), *encode(role),
                                     self._special_id("<|end_header_id|>"), *encode(HEADER_NEWLINE)]
        return toks

    def encode(self, pieces: list[Piece]) -> Encoded:
        if self.truncation == "drop":
            self._too_long_to_encode(pieces)
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        encode = self.tok.encode_text  # looked up per record: the tokenizer swaps in its fast encoder on first use
        special, header, const = self._special, self._header, self._const
        for kind, value in pieces:
            if kind == TEXT:
                ids += encode(value)
            elif kind == HEADER:
                toks = header.get(value)
                ids += toks if toks is not None else self._header_ids(value)
            elif kind == SPECIAL:
                sid = special.get(value)
                ids.append(sid if sid is not None else self._special_id(value))
            elif kind == TRAINED:
                start = len(ids)
                ids += encode(value)
                spans.append((start, len(ids)))
            elif kind == TRAINED_SPECIAL:
                sid = special.get(value)
                ids.append(sid if sid is not None else self._special_id(value))
                spans.append((len(ids) - 1, len(ids)))
            elif kind == CONST:
                toks = const.get(value)
                if toks is None:
                    toks = const[value] = encode(value)
                ids += toks
        n = len(ids)
        truncated = False
        if n > self.max_length:
            if self.truncation == "drop":
                raise Reject("too_long", f"{n} tokens, over max_length {self.max_length}")
            del ids[self.max_length:]
            n = self.max_length
            truncated = True
        input_ids = np.array(ids, dtype=np.int32)
        labels = np.full(n, IGNORE_INDEX, dtype=np.int32)
        trained = 0
        for s, e in spans:
            if s >= n:
                break
            e = min(e, n)
            labels[s:e] = input_ids[s:e]
            trained += e - s
        if trained == 0:
            reason = "no_trained_tokens_after_truncation" if truncated else "no_trained_tokens"
            raise Reject(reason, "no token of the row would be trained")
        return Encoded(input_ids, labels, trained, truncated)


_MAX_TOKEN_CHARS: dict[str, int | None] = {}


def max_token_chars(tok: Tokenizer) -> int | None:
    """The most characters of text one token of ``tok`` can stand for; None when unknown.

    tiktoken ranks: the longest token's bytes. A Hugging Face tokenizer without a normalizer: the
    longest vocabulary string (byte-level and SentencePiece strings are never shorter than the
    text they stand for). With a normalizer (which may shrink text) there is no safe bound.
    """
    key = tok.fingerprint
    if key not in _MAX_TOKEN_CHARS:
        _MAX_TOKEN_CHARS[key] = _max_token_chars(tok)
    return _MAX_TOKEN_CHARS[key]


def _max_token_chars(tok: Tokenizer) -> int | None:
    tiktoken = getattr(tok, "_tiktoken", None)
    try:
        if tiktoken is not None:
            known = tok.meta.get("max_token_bytes")  # in the cached description; older caches lack it
            return known if known is not None else max(len(b) for b in tiktoken.ranks)
        import json

        if json.loads(tok.backend.to_str()).get("normalizer") is not None:
            return None
        return max(len(t) for t in tok.backend.get_vocab())
    except Exception:  # noqa: BLE001 - no bound: encode and count, as before
        return None
