"""``ModelSource.max_token_bytes``: the fast measure (field lengths from the positions of spaces
and line ends) gives what decoding every line gives, and odd files fall back to that walk."""

from __future__ import annotations

import base64

import pytest

from sftdata.tokenizer.splintr_backend import ModelSource


def _by_lines(data: bytes) -> int:
    return max(len(base64.b64decode(line.partition(b" ")[0])) for line in data.split(b"\n"))


def _file(tmp_path, tokens: list[bytes], end: bytes = b"\n", sep: bytes = b" ") -> ModelSource:
    body = b"\n".join(base64.b64encode(t) + sep + str(i).encode() for i, t in enumerate(tokens)) + end
    path = tmp_path / "tokenizer.model"
    path.write_bytes(body)
    return ModelSource(path)


@pytest.mark.parametrize("end", [b"\n", b""])
def test_padding_decides_among_the_longest_fields(tmp_path, end):
    # "abcd" and "abcde" both take 8 base64 characters; the longest token is the 5-byte one, last
    src = _file(tmp_path, [b"a", b"abcd", b"xy", b"abcde"], end)
    assert src.max_token_bytes == 5 == _by_lines(src.data)


def test_a_longer_token_in_the_middle(tmp_path):
    src = _file(tmp_path, [b"a", bytes(range(40, 77)), b"xyz", b"q" * 20])
    assert src.max_token_bytes == 37


def test_a_file_with_other_spacing_is_measured_line_by_line(tmp_path):
    src = _file(tmp_path, [b"a", b"abcdefgh", b"xyz"], sep=b"  ")
    assert src.max_token_bytes == 8


def test_the_built_in_model(tokenizer):
    src = tokenizer._model
    assert src.max_token_bytes == _by_lines(src.data)
