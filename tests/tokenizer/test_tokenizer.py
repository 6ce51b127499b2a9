"""The built-in tokenizer (splintr over Meta's ranks) gives the ids of its Hugging Face conversion."""

from __future__ import annotations

import random

import pytest

from sftdata.tokenizer import TokenizerError, fingerprint_of, load_tokenizer
from tests.synth import generate_records
from tests.tokenizer.oracles import hf_builtin


def varied_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for rec in generate_records(n, seed=seed, hostile=True):
        for m in rec["messages"]:
            if isinstance(m.get("content"), str):
                texts.append(m["content"])
    alphabet = ["a", "Z", " ", "  ", "\n", "\t", "\r\n", "1", "23", "你", "好", "🎉", "👩‍👩‍👧", "é", "e\u0301",
                "ß", "'s", "'LL", "!", "?!", "...", "\u00a0", "\u3000", "٣", "א", "<|eot_id|>", "\x00", "\u200b"]
    for _ in range(3000):
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))))
    return texts


def test_builtin_equals_hf_on_a_varied_corpus():
    fast = load_tokenizer("builtin:llama3")
    slow = hf_builtin()
    assert fast.encoder == "splintr" and slow.encoder == "hf"
    texts = varied_texts(1500)
    assert len(texts) > 8000
    mismatched = [t for t, a, b in zip(texts, fast.encode_texts(texts), slow.encode_texts(texts), strict=True)
                  if a != b]
    assert not mismatched, mismatched[:3]


@pytest.mark.parametrize("text", [
    "x" * 120_000,
    " " * 100_001,
    "7" * 100_000,
    "🎉" * 40_000,
    "你好" * 60_000,
    ("word " * 30_000) + "\n" * 5_000,
    "!" * 100_000 + "abc",
])
def test_very_long_runs_match(text):
    fast = load_tokenizer("builtin:llama3")
    slow = hf_builtin()
    assert fast.encode_text(text) == slow.encode_text(text)


def test_special_token_text_is_never_a_control_token(tokenizer):
    ids = tokenizer.encode_text("a <|eot_id|> b <|begin_of_text|><|start_header_id|>")
    assert not set(ids) & tokenizer.special_ids
    hf_ids = hf_builtin().encode_text("a <|eot_id|> b")
    assert not set(hf_ids) & tokenizer.special_ids


def test_fingerprint_is_stable_and_sensitive(tokenizer):
    from tokenizers import Tokenizer

    assert tokenizer.fingerprint == fingerprint_of(tokenizer.backend)
    assert tokenizer.fingerprint == hf_builtin().fingerprint
    other = Tokenizer.from_str(tokenizer.backend.to_str())
    other.add_special_tokens(["<|my_new_token|>"])
    assert fingerprint_of(other) != tokenizer.fingerprint


def test_builtin_ids_and_errors(tokenizer):
    assert (tokenizer.bos_id, tokenizer.start_header_id, tokenizer.end_header_id, tokenizer.eot_id) == (
        128000, 128006, 128007, 128009)
    assert tokenizer.vocab_size == 128256
    with pytest.raises(TokenizerError):
        load_tokenizer("/nonexistent/tokenizer/dir")


@pytest.mark.parametrize("spec", ["/nonexistent/tok", "./no/such", "../x", "a/b/c", "~/nope"])
def test_a_missing_tokenizer_folder_is_named_in_one_line(spec):
    with pytest.raises(TokenizerError) as err:
        load_tokenizer(spec)
    assert str(err.value) == f"--tokenizer {spec}: no such tokenizer folder"


def test_a_file_is_not_a_tokenizer_folder(tmp_path):
    (tmp_path / "tok").write_text("{}")
    with pytest.raises(TokenizerError, match="not a folder"):
        load_tokenizer(str(tmp_path / "tok"))
