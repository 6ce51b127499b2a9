"""splintr, the default BPE engine for big runs, gives tiktoken's ids (and so Hugging Face's).

The engines may differ only in speed: every test here compares ids or output bytes, and each
would fail if splintr (or the glue around it) produced one id that tiktoken does not.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata.config import Settings
from sftdata.tokenizer import TokenizerError, load_tokenizer
from sftdata.tokenizer import splintr_backend as sb
from tests.conftest import run_committed, write_jsonl
from tests.synth import generate_records
from tests.tokenizer.test_tokenizer import varied_texts

pytest.importorskip("splintr")


@pytest.fixture(scope="module")
def engines():
    return load_tokenizer("builtin:llama3", "splintr"), load_tokenizer("builtin:llama3", "tiktoken")


def random_unicode(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    picks = [lambda: rng.randint(0x20, 0x7E), lambda: rng.randint(0, 0x2FFF), lambda: rng.randint(0xE000, 0x10FFFF),
             lambda: rng.choice([9, 10, 13, 32, 0x85, 0xA0, 0x2028, 0x3000])]
    return ["".join(chr(rng.choice(picks)()) for _ in range(rng.randint(1, 80))) for _ in range(n)]


def test_same_ids_on_the_tokenizer_test_corpus(engines):
    fast, ref = engines
    assert fast.encoder == "splintr" and ref.encoder == "tiktoken"
    texts = varied_texts(1500) + random_unicode(6000, seed=7)
    assert len(texts) > 14000
    mismatched = [t for t, a, b in zip(texts, fast.encode_texts(texts), ref.encode_texts(texts), strict=True) if a != b]
    assert not mismatched, mismatched[:3]


def test_same_ids_on_the_shared_corpus(engines, shared_corpus):
    fast, ref = engines
    texts = [m["content"] for r in shared_corpus for m in r.get("messages", []) if isinstance(m.get("content"), str)]
    assert len(texts) > 5000
    assert [fast.encode_text(t) for t in texts] == [ref.encode_text(t) for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=200))
def test_same_ids_on_any_text(text):
    fast, ref = load_tokenizer("builtin:llama3", "splintr"), load_tokenizer("builtin:llama3", "tiktoken")
    assert fast.encode_text(text) == ref.encode_text(text)


@pytest.mark.parametrize("text", ["a\ud800b", "\udfff", "x \udc00\ud800 y", "你\ud83d好"])
def test_lone_surrogates_get_tiktokens_repair(engines, text):
    fast, ref = engines
    assert fast.encode_text(text) == ref.encode_text(text)


@pytest.mark.parametrize("text", ["x" * 120_000, " " * 100_001, "7" * 100_000, "🎉" * 40_000, "你好" * 60_000,
                                  "!" * 100_000 + "abc"])
def test_very_long_runs_match_hugging_face_without_the_fallback(engines, text):
    slow = load_tokenizer("builtin:llama3", "hf")
    assert engines[0].encode_text(text) == slow.encode_text(text)


def test_control_token_text_stays_text(engines):
    ids = engines[0].encode_text("a <|eot_id|> b <|begin_of_text|><|start_header_id|>")
    assert not set(ids) & engines[0].special_ids


def test_a_changed_model_file_is_refused(tmp_path):
    model = tmp_path / "tokenizer.model"
    model.write_bytes(b"not the file")
    with pytest.raises(TokenizerError, match="SHA-256"):
        sb.build_splintr(model, "0" * 64)


def test_auto_picks_by_input_size_and_falls_back_without_splintr(monkeypatch):
    assert sb.pick_engine(sb.SPLINTR_MIN_INPUT_BYTES) == "splintr"
    assert sb.pick_engine(sb.SPLINTR_MIN_INPUT_BYTES - 1) == "tiktoken"
    monkeypatch.setattr(sb, "splintr_available", lambda: False)
    assert sb.pick_engine(10 * sb.SPLINTR_MIN_INPUT_BYTES) == "tiktoken"


def test_the_runner_makes_auto_concrete_only_for_the_builtin_tokenizer():
    from sftdata.runner import _with_engine

    base = Settings()
    assert _with_engine(base, 10 << 20).encoder == "splintr"
    assert _with_engine(base, 1000).encoder == "tiktoken"
    assert _with_engine(replace(base, encoder="tiktoken"), 10 << 20).encoder == "tiktoken"
    other = replace(base, tokenizer="/some/folder")
    assert _with_engine(other, 10 << 20).encoder == "auto"


def test_splintr_is_only_for_the_builtin_tokenizer():
    with pytest.raises(TokenizerError, match="only available for builtin"):
        load_tokenizer("/nonexistent", "splintr")


@pytest.mark.parametrize("packing", ["none", "bfd"])
def test_run_output_is_byte_identical_with_either_engine(tmp_path, packing):

    src = write_jsonl(tmp_path / "in.jsonl", generate_records(400, seed=11, hostile=True))
    out = {}
    for engine in ("tiktoken", "splintr"):
        s = replace(Settings(), encoder=engine, packing=packing, max_length=2048, dedupe="exact")
        run_committed(s, [str(src)], tmp_path / engine, workers=2)
        out[engine] = {p.name: p.read_bytes() for p in sorted((tmp_path / engine).iterdir())
                       if p.suffix in (".arrow", ".jsonl")}
    assert len(out["splintr"]) >= 2 and out["splintr"] == out["tiktoken"]


def _ids(b: bytes) -> list[int]:
    import numpy as np

    return np.frombuffer(b, dtype=np.int32).tolist()


@pytest.mark.parametrize("encoder", ["splintr", "tiktoken", "hf"])
def test_the_bytes_encoder_gives_the_list_encoders_ids(encoder):
    """``encode_text_bytes`` (what ``PieceEncoder`` joins) holds exactly ``encode_text``'s ids, as
    this machine's int32s, for every engine: splintr's own flat output and the others' packing."""
    tok = load_tokenizer("builtin:llama3", encoder)
    texts = varied_texts(300) + random_unicode(1500, seed=9) + ["x" * 5000, "", "\n\n"]
    if encoder != "hf":  # Hugging Face refuses lone surrogates (parsing rejects such records before)
        texts += ["a\ud800b", "\udfff"]
    assert [_ids(tok.encode_text_bytes(t)) for t in texts] == [tok.encode_text(t) for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=200))
def test_splintr_bytes_equal_tiktoken_ids_on_any_text(text):
    fast, ref = load_tokenizer("builtin:llama3", "splintr"), load_tokenizer("builtin:llama3", "tiktoken")
    assert _ids(fast.encode_text_bytes(text)) == ref.encode_text(text)
