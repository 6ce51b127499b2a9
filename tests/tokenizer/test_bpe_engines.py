"""splintr, the one engine of the built-in tokenizer, gives tiktoken's ids and Hugging Face's.

tiktoken (over Meta's ranks, decoded by its own loader) and the Hugging Face conversion are the
independent oracles (``tests/oracles.py``). Every test here compares ids or output bytes, and each
would fail if splintr (or the glue around it) produced one id that the oracles do not.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata.config import Settings
from sftdata.tokenizer import convert_builtin, load_tokenizer
from tests.conftest import run_committed, write_jsonl
from tests.synth import generate_records
from tests.tokenizer.oracles import hf_builtin, tiktoken_ids
from tests.tokenizer.test_tokenizer import varied_texts

pytest.importorskip("tiktoken")


@pytest.fixture(scope="module")
def splintr():
    tok = load_tokenizer("builtin:llama3")
    assert tok.encoder == "splintr"
    return tok


def random_unicode(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    picks = [lambda: rng.randint(0x20, 0x7E), lambda: rng.randint(0, 0x2FFF), lambda: rng.randint(0xE000, 0x10FFFF),
             lambda: rng.choice([9, 10, 13, 32, 0x85, 0xA0, 0x2028, 0x3000])]
    return ["".join(chr(rng.choice(picks)()) for _ in range(rng.randint(1, 80))) for _ in range(n)]


def test_same_ids_as_both_oracles_on_generated_and_random_text(splintr):
    texts = varied_texts(1500) + random_unicode(6000, seed=7)
    assert len(texts) > 14000
    ours, hf = splintr.encode_texts(texts), hf_builtin().encode_texts(texts)
    mismatched = [t for t, a, b, c in zip(texts, ours, hf, map(tiktoken_ids, texts), strict=True) if not a == b == c]
    assert not mismatched, mismatched[:3]


def test_same_ids_on_the_shared_corpus(splintr, shared_corpus):
    texts = [m["content"] for r in shared_corpus for m in r.get("messages", []) if isinstance(m.get("content"), str)]
    assert len(texts) > 5000
    assert [splintr.encode_text(t) for t in texts] == [tiktoken_ids(t) for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=200))
def test_same_ids_on_any_text(text):
    assert load_tokenizer("builtin:llama3").encode_text(text) == tiktoken_ids(text)


@pytest.mark.parametrize("text", ["a\ud800b", "\udfff", "x \udc00\ud800 y", "你\ud83d好"])
def test_lone_surrogates_get_tiktokens_repair(splintr, text):
    assert splintr.encode_text(text) == tiktoken_ids(text)


@pytest.mark.parametrize("text", ["x" * 120_000, " " * 100_001, "7" * 100_000, "🎉" * 40_000, "你好" * 60_000,
                                  "!" * 100_000 + "abc", ("word " * 30_000) + "\n" * 5_000])
def test_very_long_runs_match_hugging_face(splintr, text):
    assert splintr.encode_text(text) == hf_builtin().encode_text(text)


def test_control_token_text_stays_text(splintr):
    ids = splintr.encode_text("a <|eot_id|> b <|begin_of_text|><|start_header_id|>")
    assert not set(ids) & splintr.special_ids


@pytest.mark.parametrize("packing", ["none", "bfd"])
def test_run_output_is_byte_identical_with_the_hugging_face_folder(tmp_path, packing):
    """The built-in tokenizer (splintr) and its conversion loaded as a folder (Hugging Face) write
    the same shards and quarantine."""
    src = write_jsonl(tmp_path / "in.jsonl", generate_records(400, seed=11, hostile=True))
    out = {}
    for name, spec in (("builtin", "builtin:llama3"), ("folder", str(convert_builtin()))):
        s = replace(Settings(), tokenizer=spec, packing=packing, max_length=2048, dedupe="exact")
        run_committed(s, [str(src)], tmp_path / name, workers=2)
        out[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())
                     if p.suffix in (".arrow", ".jsonl")}
    assert len(out["builtin"]) >= 2 and out["builtin"] == out["folder"]


def _ids(b: bytes) -> list[int]:
    import numpy as np

    return np.frombuffer(b, dtype=np.int32).tolist()


@pytest.mark.parametrize("kind", ["builtin", "folder"])
def test_the_bytes_encoder_gives_the_list_encoders_ids(kind):
    """``encode_text_bytes`` (what ``PieceEncoder`` joins) holds exactly ``encode_text``'s ids, as
    this machine's int32s, on both encode paths: splintr's own flat output and the packed lists."""
    tok = load_tokenizer("builtin:llama3") if kind == "builtin" else hf_builtin()
    texts = varied_texts(300) + random_unicode(1500, seed=9) + ["x" * 5000, "", "\n\n"]
    if kind == "builtin":  # Hugging Face refuses lone surrogates (parsing rejects such records before)
        texts += ["a\ud800b", "\udfff"]
    assert [_ids(tok.encode_text_bytes(t)) for t in texts] == [tok.encode_text(t) for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=200))
def test_splintr_bytes_equal_tiktoken_ids_on_any_text(text):
    assert _ids(load_tokenizer("builtin:llama3").encode_text_bytes(text)) == tiktoken_ids(text)


@pytest.mark.parametrize("value", ["auto", "hf", "tiktoken", "splintr"])
def test_the_pipelines_encoder_key_still_loads_and_changes_nothing(value):
    from sftdata.config import settings_from_dict

    got = settings_from_dict({"version": 1, "stages": {"render": {"encoder": value, "template": "llama3.1"}}})
    assert got == Settings(template="llama3.1")
