"""The small-run BPE core (tiktoken's core over only the ranks the texts reach) gives the full core's ids.

Every test compares ids with tiktoken's core over all 128k ranks, built here on its own, so none
of them passes if ``rank_subset`` leaves out one rank a pre-token needs, cuts a region where the
Llama-3 pattern does not cut, or splits plain ASCII differently from the engine's regex.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata.config import Settings
from sftdata.process.record import RecordProcessor
from sftdata.stages.render import CONST, HEADER, TEXT, TRAINED
from sftdata.tokenizer import load_tokenizer
from sftdata.tokenizer import rank_subset as rs
from sftdata.tokenizer.llama3 import LLAMA3_PATTERN
from sftdata.tokenizer.tiktoken_backend import TiktokenBackend
from tests.synth import generate_records
from tests.tokenizer.test_bpe_engines import random_unicode
from tests.tokenizer.test_tokenizer import varied_texts


@pytest.fixture(scope="module")
def backend() -> TiktokenBackend:
    shared = load_tokenizer("builtin:llama3", "tiktoken")._tiktoken
    return TiktokenBackend(shared.model_file, shared.cache_folder, shared.model_sha256)  # nothing built yet


@pytest.fixture(scope="module")
def full(backend):
    from tiktoken import _tiktoken

    return _tiktoken.CoreBPE(backend.ranks, {}, LLAMA3_PATTERN).encode_ordinary


def subset_of(backend, texts) -> rs.RankSubset:
    subset = rs.RankSubset(backend.index, backend.pair_max, LLAMA3_PATTERN)
    subset.add(texts)
    return subset


def assert_same(backend, full, texts, group: int = 400) -> None:
    """Each group of ``texts`` primes one small core, as one chunk does; every id must match."""
    for start in range(0, len(texts), group):
        part = texts[start:start + group]
        core = subset_of(backend, part).core
        bad = [t for t in part if core.encode_ordinary(t) != full(t)]
        assert not bad, bad[:3]


def test_every_short_ascii_string_over_the_patterns_classes(backend, full):
    # letters (the contraction ones among them), digits, each kind of whitespace, symbols, apostrophe
    alphabet = ["a", "S", "t", "l", "'", "7", " ", "\n", "\r", "\t", ".", "-"]
    texts = ["".join(p) for n in range(1, 5) for p in itertools.product(alphabet, repeat=n)]
    texts += ["".join(p) for p in itertools.product(["x", " ", "\n", "1", "!"], repeat=6)]
    assert len(texts) > 37_000
    assert_same(backend, full, texts, group=5000)


def test_varied_and_random_unicode_text(backend, full):
    texts = varied_texts(800) + random_unicode(4000, seed=11)
    rng = random.Random(3)  # ASCII islands inside non-ASCII text and back: regions next to each other
    pieces = ["word", " ", "  ", "\n\n", "你好", "🎉", "'s", "123456", "!!", "\u00a0", "\u3000x", "é", "\x0b", "\x1c"]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))) for _ in range(3000)]
    assert_same(backend, full, texts)


def test_the_rendered_texts_of_the_shared_corpus(backend, full, shared_corpus):
    proc = RecordProcessor(Settings(template="llama3.1", date_string="26 Jul 2024"))
    texts: list[str] = []
    for i, record in enumerate(shared_corpus):
        try:
            conv = proc.conversation(record, "sft-mix.jsonl", i + 1)
        except Exception:  # noqa: BLE001 - rejected records render nothing
            continue
        texts += [value for kind, value in proc.renderer.render(conv) if kind in (TEXT, TRAINED, CONST, HEADER)]
    assert len(texts) > 15_000
    assert_same(backend, full, texts, group=300)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(codec="utf-8"), max_size=120), min_size=1, max_size=8))
def test_any_texts(texts):
    shared = load_tokenizer("builtin:llama3", "tiktoken")._tiktoken
    core = subset_of(shared, texts).core
    reference = shared.encoding._core_bpe
    assert [core.encode_ordinary(t) for t in texts] == [reference.encode_ordinary(t) for t in texts]


def test_other_texts_are_checked_and_added(backend, full):
    """A text the core was not built for is covered only after it has been added."""
    subset = subset_of(backend, ["Hello world"])
    for text in ["Hello world", "Hello worlds", "你好 world", "x\n\n  y", "Hello world"]:
        if not subset.covers(text):
            subset.add([text])
        assert subset.covers(text)
        assert subset.core.encode_ordinary(text) == full(text)
    assert not subset.covers("Entirely different words")


def test_the_primed_tokenizer_falls_back_to_the_full_core(backend, full, monkeypatch):
    monkeypatch.setattr(rs, "MAX_REBUILDS", 2)
    primed_texts = {"Hello there"}
    subset = subset_of(backend, primed_texts)
    built = []

    def full_core():
        built.append(1)
        return backend.encoding._core_bpe

    encode = rs.make_subset_encode(subset, primed_texts, full_core)
    texts = ["Hello there", "general Kenobi", "你好", "🎉 again", "more text", "Hello there"]
    assert [encode(t) for t in texts] == [full(t) for t in texts]
    assert built == [1]  # the third text that needed ranks of its own switched to the full core


def test_a_primed_tokenizer_is_a_copy(full):
    from sftdata.tokenizer import loader

    tok = loader._load_builtin("tiktoken")  # not the cached one: its full core is not built
    assert tok.primable
    primed = tok.primed(["a few words", "你好"])
    assert primed is not tok and "encode_text" not in tok.__dict__
    for text in ["a few words", "你好", "not primed \ud800 at all", "x" * 5000]:
        assert primed.encode_text(text) == tok._tiktoken.encoding.encode_ordinary(text)
    assert tok.primed(["x"]) is tok  # the reference above built the full core: nothing to gain now
    assert load_tokenizer("builtin:llama3", "splintr").primed(["x"]).encoder == "splintr"


def test_the_index_finds_exactly_the_ranks_of_the_dict(backend):
    ranks, rng = backend.ranks, random.Random(9)
    tokens = list(ranks)
    candidates = rng.sample(tokens, 20_000) + [t for t in tokens if 0 in t]  # NUL bytes inside and at the end
    candidates += [t + b"\x00" for t in rng.sample(tokens, 3000)] + [t[:-1] for t in rng.sample(tokens, 3000)]
    candidates += [bytes(rng.randrange(256) for _ in range(rng.randint(1, 140))) for _ in range(3000)]
    assert backend.index.find(candidates) == {c: ranks[c] for c in candidates if c in ranks}
    assert backend.index.find([]) == {}


def test_pair_bounds_are_the_longest_rank_per_prefix(backend):
    expected = [0] * 65536
    for token in backend.ranks:
        if len(token) >= 2:
            key = (token[0] << 8) | token[1]
            expected[key] = max(expected[key], len(token))
    assert backend.pair_max == expected
    assert max(expected) == 128


def test_a_small_run_primes_and_writes_what_the_full_core_writes(tmp_path, monkeypatch):
    from sftdata.runner import run_pipeline
    from sftdata.tokenizer import loader
    from tests.conftest import write_jsonl

    records = generate_records(150, seed=5, hostile=True, tools=True)
    src = write_jsonl(tmp_path / "in.jsonl", records)
    assert src.stat().st_size <= rs.PRIME_MAX_BYTES
    primed = []
    real = TiktokenBackend.subset_encode
    monkeypatch.setattr(TiktokenBackend, "subset_encode", lambda self, texts: primed.append(1) or real(self, texts))
    loader._load_tokenizer.cache_clear()  # a tokenizer whose full core no earlier test has built
    try:
        outs = {}
        for engine in ("tiktoken", "splintr"):
            outs[engine] = tmp_path / engine
            run_pipeline(Settings(encoder=engine, packing="bfd", max_length=1024), [str(src)], str(outs[engine]),
                         workers=1)
        assert not load_tokenizer("builtin:llama3", "tiktoken")._tiktoken.built  # no core over all ranks
    finally:
        loader._load_tokenizer.cache_clear()
    assert primed == [1]
    files = sorted(p.name for p in outs["tiktoken"].iterdir() if p.name.startswith(("shard-", "quarantine")))
    assert any(f.startswith("shard-") for f in files) and "quarantine.jsonl" in files
    for name in files:
        assert (outs["tiktoken"] / name).read_bytes() == (outs["splintr"] / name).read_bytes(), name


def test_priming_is_skipped_where_finding_the_ranks_costs_more():
    assert rs.priming_pays(["an English sentence of plain words. "] * 100)
    assert rs.priming_pays(["你好，世界。" * 50])
    assert not rs.priming_pays(["你好，世界。" * 5000])  # 90,000 bytes of Chinese: the full core is cheaper
    assert not rs.priming_pays(["word " * 200_000])
