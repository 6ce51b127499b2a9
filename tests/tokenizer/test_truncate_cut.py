"""``truncation: truncate`` cuts text before encoding, and the ids stay those of the whole record.

A 60 MB record was tokenized whole (40 s, 4.4 GB) although every id past ``max_length`` is thrown
away. The encoder now sends at most about ``max_token_bytes * max_length`` characters of it, cut
where the pre-tokenizer certainly ends a pre-token (``sftdata.tokenizer.boundaries``).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata.constants import IGNORE_INDEX
from sftdata.stages.encode import PieceEncoder
from sftdata.stages.records import Reject
from sftdata.stages.render import HEADER, SPECIAL, TEXT, TRAINED, TRAINED_SPECIAL
from sftdata.tokenizer import load_tokenizer
from sftdata.tokenizer.boundaries import safe_cut

ALPHABET = ["a", "Z", "é", "ß", "中", "文", "。", "，", "😀", "👍🏽", "\u0301", " ", "  ", "\u00a0", "\u3000", "\n", "\r\n",
            "\t", "7", "42", "123456", "!", "..", "'s", "'LL", "word", "\x1c", "\u2028", "٣", "א", "\ud800"]


def varied(rng: random.Random, n: int) -> str:
    parts = [rng.choice(ALPHABET) for _ in range(n)]
    if rng.random() < 0.3:  # a long run of one class
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(["q", "+", " ", "中", "9"]) * rng.randrange(50, 500))
    return "".join(parts)


def cuts(text: str) -> list[int]:
    out, at = [], 1
    while (c := safe_cut(text, at)) is not None:
        out.append(c)
        at = c + 1
    return out


def assert_prefix_ids(tok, text: str) -> int:
    whole = tok.encode_text(text)
    found = cuts(text)
    for c in found:
        head = tok.encode_text(text[:c])
        assert whole[:len(head)] == head, (text[:c], text[c:c + 10])
    return len(found)


def test_every_cut_keeps_the_ids_before_it():
    tok = load_tokenizer()
    rng = random.Random(3)
    checked = sum(assert_prefix_ids(tok, varied(rng, rng.randrange(5, 120))) for _ in range(800))
    assert checked > 5000


def test_cuts_fall_only_where_the_pattern_ends_a_pre_token():
    assert cuts("ab cd") == [2]
    assert cuts("a  b") == [1]  # not inside the run of spaces: a space before a space is no cut
    assert cuts("中文。好") == [2]
    assert cuts("123,x") == [3]
    assert cuts("x,\ny") == [1] and cuts(",\ny") == []  # a symbol takes the line break with it
    assert safe_cut("no", 1) is None and safe_cut("a b", 5) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET[:-1] + ["x", "-", "$", "\u0300", "\U0001F3FD", "Ω"]), max_size=60),
       st.text(max_size=20))
def test_every_cut_keeps_the_ids_before_it_on_any_text(parts, noise):
    assert_prefix_ids(load_tokenizer(), "".join(parts) + noise)


def whole_then_truncated(tok, pieces, max_length):
    """What ``truncate`` gives by encoding every piece whole and cutting the ids: the reference."""
    ids, spans = [], []
    for kind, value in pieces:
        if kind in (SPECIAL, TRAINED_SPECIAL):
            new = [tok.token_id(value)]
        elif kind == HEADER:
            new = [tok.start_header_id, *tok.encode_text(value), tok.end_header_id, *tok.encode_text("\n\n")]
        else:
            new = tok.encode_text(value)
        if kind in (TRAINED, TRAINED_SPECIAL):
            spans.append((len(ids), len(ids) + len(new)))
        ids += new
    truncated = len(ids) > max_length
    ids = ids[:max_length]
    labels = [IGNORE_INDEX] * len(ids)
    for s, e in spans:
        labels[s:e] = ids[s:e]
    return ids, labels[:len(ids)], truncated


def record(rng: random.Random, tok, max_length: int) -> list:
    bound = tok.max_token_bytes * max_length  # where the encoder starts looking for a cut
    filler = varied(rng, 40)
    long_text = filler * (bound // max(1, len(filler)) + 2) + varied(rng, 200)
    return [(SPECIAL, "<|begin_of_text|>"), (HEADER, "user"), (TEXT, varied(rng, rng.randrange(1, 30))),
            (SPECIAL, "<|eot_id|>"), (HEADER, "assistant"), (TRAINED, long_text), (TRAINED_SPECIAL, "<|eot_id|>"),
            (HEADER, "user"), (TEXT, varied(rng, 50))]


@pytest.mark.parametrize("max_length", [8, 17, 64, 300])
def test_truncate_gives_the_ids_of_the_whole_record(max_length):
    tok = load_tokenizer()
    rng = random.Random(max_length)
    enc = PieceEncoder(tok, max_length, "truncate")
    for _ in range(25):
        pieces = record(rng, tok, max_length)
        ids, labels, truncated = whole_then_truncated(tok, pieces, max_length)
        try:
            got = enc.encode(pieces)
        except Reject as rej:  # nothing of the assistant turn fits: the reference agrees
            assert rej.reason == "no_trained_tokens_after_truncation" and all(x == IGNORE_INDEX for x in labels)
            continue
        assert got.input_ids.tolist() == ids and got.labels.tolist() == labels and got.truncated == truncated


def test_a_huge_record_is_cut_before_it_is_encoded(tokenizer, monkeypatch):
    max_length = 512
    text = "The quick brown 狐狸 jumps over 42 lazy dogs. " * 150_000  # about 7 MB
    pieces = [(SPECIAL, "<|begin_of_text|>"), (HEADER, "assistant"), (TRAINED, text), (TRAINED_SPECIAL, "<|eot_id|>")]
    expected, labels, truncated = whole_then_truncated(tokenizer, pieces, max_length)
    seen: list[int] = []
    encode = tokenizer.encode_text_bytes

    def spy(value: str) -> bytes:
        seen.append(len(value))
        return encode(value)

    monkeypatch.setattr(tokenizer, "encode_text_bytes", spy)
    got = PieceEncoder(tokenizer, max_length, "truncate").encode(pieces)
    assert max(seen) <= tokenizer.max_token_bytes * max_length + 100
    assert got.input_ids.tolist() == expected and got.labels.tolist() == labels and got.truncated and truncated
    assert np.count_nonzero(got.labels != IGNORE_INDEX) == got.trained


def test_drop_still_encodes_to_count(tokenizer):
    """``drop`` needs the count, not a prefix: nothing is cut there (the refusal is the pre-check's)."""
    with pytest.raises(Reject, match="too_long|max_length"):
        PieceEncoder(tokenizer, 16, "drop").encode([(SPECIAL, "<|begin_of_text|>"), (TRAINED, "word " * 100)])
