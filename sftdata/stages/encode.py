"""Tokenize rendered pieces and build response-only labels.

Labels are unshifted (the model shifts) and ``IGNORE_INDEX`` everywhere except the trained
pieces. Text pieces go through the tokenizer's text-only encoder, so content can never produce a
control token; control tokens come only from the renderer, by id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sftdata.constants import IGNORE_INDEX
from sftdata.stages.records import Reject
from sftdata.stages.render import CONST, HEADER, HEADER_NEWLINE, SPECIAL, TEXT, TRAINED, TRAINED_SPECIAL, Piece
from sftdata.tokenizer import Tokenizer
from sftdata.tokenizer.boundaries import safe_cut

_INT32 = np.dtype(np.int32)


@dataclass(slots=True)
class Encoded:
    input_ids: np.ndarray  # int32
    labels: np.ndarray  # int32
    trained: int
    truncated: bool = False


class PieceEncoder:
    """Turns pieces into ids and labels. ``truncation``: ``drop`` or ``truncate``.

    This loop runs once per piece (about 11 per record), around the BPE. The ids grow as int32
    bytes in one ``bytearray`` (the tokenizer's ``encode_text_bytes``: splintr writes them without
    making a Python int per token) and become the ``input_ids`` array without a conversion;
    control-token ids, headers and constant pieces are looked up as bytes in one dict each, and
    the trained count comes from the spans instead of a pass over the labels.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int, truncation: str = "drop") -> None:
        if truncation not in ("drop", "truncate"):
            raise ValueError(f"unknown truncation {truncation!r}; expected drop or truncate")
        self.tok = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self._special: dict[str, bytes] = {}
        self._header: dict[object, bytes] = {}
        self._const: dict[object, bytes] = {}

    def _special_bytes(self, name: str) -> bytes:
        b = self._special.get(name)
        if b is None:
            sid = self.tok.token_id(name)
            if sid is None:  # the error an int array gave for a missing control token (its rejection message)
                raise TypeError("'NoneType' object cannot be interpreted as an integer")
            b = self._special[name] = _int32_bytes([sid])
        return b

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

    def _cut_for_truncation(self, pieces: list[Piece]) -> tuple[list[Piece], bool]:
        """``pieces`` without the text whose ids ``truncate`` would throw away, and whether any was cut.

        Each character of text is at least one byte and a token at most ``max_token_bytes``, so
        ``max_token_bytes * max_length`` characters of text hold at least ``max_length`` tokens. Text
        past that bound (counted from the start of the record) is cut at the first place where the
        ids before the cut cannot change (``tokenizer.boundaries``), and the pieces after it are
        left out; the ids kept are those of the whole record. Only for the built-in tokenizer (its
        pre-tokenizer is the one the boundaries are proven for); a text with no such place later
        on is encoded whole.
        """
        per = self.tok.max_token_bytes if self.tok.cuts_at_boundaries else None
        if not per:
            return pieces, False
        need = per * self.max_length  # characters of text still to keep
        if sum([len(v) for k, v in pieces if k == TEXT or k == TRAINED]) <= need:
            return pieces, False
        for at, (kind, value) in enumerate(pieces):
            if (kind != TEXT and kind != TRAINED) or not value:
                continue
            if need <= 0:  # the text before holds max_length tokens; this one adds at least one more
                return pieces[:at], True
            if len(value) > need:
                cut = safe_cut(value, need)
                if cut is not None:
                    return [*pieces[:at], (kind, value[:cut])], True
            need -= len(value)
        return pieces, False

    def _header_bytes(self, role: object) -> bytes:
        encode = self.tok.encode_text_bytes
        b = self._header[role] = (self._special_bytes("<|start_header_id|>") + encode(role)
                                  + self._special_bytes("<|end_header_id|>") + encode(HEADER_NEWLINE))
        return b

    def encode(self, pieces: list[Piece]) -> Encoded:
        cut = False
        if self.truncation == "drop":
            self._too_long_to_encode(pieces)
        else:
            pieces, cut = self._cut_for_truncation(pieces)
        buf = bytearray()
        spans: list[tuple[int, int]] = []  # byte offsets of the trained ids in buf
        encode = self.tok.encode_text_bytes  # looked up per record: the tokenizer builds its engine on first use
        special, header, const = self._special, self._header, self._const
        for kind, value in pieces:
            if kind == TEXT:
                buf += encode(value)
            elif kind == HEADER:
                b = header.get(value)
                buf += b if b is not None else self._header_bytes(value)
            elif kind == SPECIAL:
                b = special.get(value)
                buf += b if b is not None else self._special_bytes(value)
            elif kind == TRAINED:
                start = len(buf)
                buf += encode(value)
                spans.append((start, len(buf)))
            elif kind == TRAINED_SPECIAL:
                b = special.get(value)
                start = len(buf)
                buf += b if b is not None else self._special_bytes(value)
                spans.append((start, len(buf)))
            elif kind == CONST:
                b = const.get(value)
                if b is None:
                    b = const[value] = encode(value)
                buf += b
        n = len(buf) >> 2
        truncated = cut  # a cut record had more than max_length tokens whole
        if n > self.max_length:
            if self.truncation == "drop":
                raise Reject("too_long", f"{n} tokens, over max_length {self.max_length}")
            del buf[self.max_length * 4:]
            n = self.max_length
            truncated = True
        input_ids = np.frombuffer(buf, _INT32)  # a dtype object, not a keyword: numpy parses less per call
        labels = np.empty(n, _INT32)
        labels.fill(IGNORE_INDEX)
        trained = 0
        for s, e in spans:
            s >>= 2
            if s >= n:
                break
            e = min(e >> 2, n)
            labels[s:e] = input_ids[s:e]
            trained += e - s
        if trained == 0:
            reason = "no_trained_tokens_after_truncation" if truncated else "no_trained_tokens"
            raise Reject(reason, "no token of the row would be trained")
        return Encoded(input_ids, labels, trained, truncated)


def _int32_bytes(ids: list[int]) -> bytes:
    """``ids`` as machine-order int32 bytes, the layout of ``Tokenizer.encode_text_bytes``."""
    return np.asarray(ids, dtype=np.int32).tobytes()


_MAX_TOKEN_CHARS: dict[str, int | None] = {}


def max_token_chars(tok: Tokenizer) -> int | None:
    """The most characters of text one token of ``tok`` can stand for; None when unknown.

    The built-in tokenizer: its longest token's bytes. A Hugging Face tokenizer without a normalizer: the
    longest vocabulary string (byte-level and SentencePiece strings are never shorter than the
    text they stand for). With a normalizer (which may shrink text) there is no safe bound.
    """
    key = tok.fingerprint
    if key not in _MAX_TOKEN_CHARS:
        _MAX_TOKEN_CHARS[key] = _max_token_chars(tok)
    return _MAX_TOKEN_CHARS[key]


def _max_token_chars(tok: Tokenizer) -> int | None:
    if tok.max_token_bytes is not None:  # the built-in tokenizer's, checked against its model file
        return tok.max_token_bytes
    try:
        import json

        if json.loads(tok.backend.to_str()).get("normalizer") is not None:
            return None
        return max(len(t) for t in tok.backend.get_vocab())
    except Exception:  # noqa: BLE001 - no bound: encode and count, as before
        return None
