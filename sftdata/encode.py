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

    def _header_ids(self, role: object) -> list[int]:
        encode = self.tok.encode_text
        toks = self._header[role] = [self._special_id("<|start_header_id|>"), *encode(role),
                                     self._special_id("<|end_header_id|>"), *encode(HEADER_NEWLINE)]
        return toks

    def encode(self, pieces: list[Piece]) -> Encoded:
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
