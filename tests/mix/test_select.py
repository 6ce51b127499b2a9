"""The selection rules of a mix (docs/mixing.md): budgets, repeats, the split, and the columnar
decisions (``sftdata.mix.select``, ``sftdata.mix.decide``) against the straightforward reference
(``tests/mix/reference_select.py``) on generated facts."""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from itertools import groupby

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.mix.decide import decide
from sftdata.mix.facts import FactsBuilder, Needs, concatenate, keyed
from sftdata.mix.recipe import Recipe, Source, Split, Take
from sftdata.mix.select import MixBudgetError, split_eval, take_copies
from tests.conftest import settings as make_settings
from tests.mix import reference_select as ref
from tests.mix.reference_select import Fact


def digest(label: str) -> str:
    return hashlib.blake2b(label.encode(), digest_size=16).hexdigest()


def facts(n: int, source: str = "a", seed: int = 0, groups: int | None = None) -> list[Fact]:
    r = random.Random(seed)
    base = 0 if source == "a" else 10_000  # (chunk, line) stay unique across sources
    return [Fact(source, base + i // 10, i % 10 + 1, f"{source}{i}", digest(f"{source}-c{i}"),
                 digest(f"p{r.randrange(groups)}" if groups else f"{source}-p{i}"), r.randint(5, 400))
            for i in range(n)]


def columns(fs: list[Fact], names: list[str], needs: Needs):
    """The facts as the first pass gives them: one ``ChunkFacts`` per chunk, in plan order."""
    parts = []
    for (chunk, source), rows in groupby(sorted(fs, key=lambda f: (names.index(f.source), f.chunk, f.line)),
                                         key=lambda f: (f.chunk, f.source)):
        builder = FactsBuilder(needs, source)
        for f in rows:
            builder.add(f.line, f.id, f.content_hash, f.prompt_hash, f.tokens)
        parts.append(builder.build(chunk, f"blake2b:{chunk}"))
    return concatenate(parts, names, needs)


def taken(fs: list[Fact], take: Take, seed: int) -> dict[tuple[int, int], int]:
    """``take_copies`` of one source, as (chunk, line) -> copies."""
    cols = columns(fs, ["a"], Needs(seed, frozenset({"a"}), tokens=True))
    copies = take_copies(np.arange(len(fs)), cols, take, "a")
    return {(int(c), int(line)): int(k) for c, line, k in zip(cols.chunk, cols.lines, copies, strict=True) if k}


@pytest.mark.parametrize("seed", range(8))
def test_token_budget_definition_holds(seed):
    fs = facts(300, seed=seed)
    budget = random.Random(seed).randint(1_000, 50_000)
    kept = taken(fs, Take("tokens", budget), seed)
    used = sum(f.tokens for f in fs if f.where in kept)
    assert used <= budget
    assert all(f.tokens > budget - used for f in fs if f.where not in kept)


def test_token_budget_above_the_source_is_refused():
    fs = facts(10)
    with pytest.raises(MixBudgetError, match="only"):
        taken(fs, Take("tokens", sum(f.tokens for f in fs) + 1), 0)


def test_selection_ignores_input_order_and_follows_the_seed():
    fs = facts(200)
    moved = [Fact(f.source, 199 - f.chunk, f.line, f.id, f.content_hash, f.prompt_hash, f.tokens) for f in fs]
    for take in (Take("records", 50), Take("fraction", 0.3), Take("repeat", 1.7), Take("tokens", 9_000)):
        ids = {f.where: f.id for f in fs} | {f.where: f.id for f in moved}
        assert {ids[w] for w in taken(fs, take, 1)} == {ids[w] for w in taken(moved, take, 1)}
        assert taken(fs, take, 1) != taken(fs, take, 2)


def test_repeat_counts():
    copies = taken(facts(101), Take("repeat", 3.25), 4)
    assert Counter(copies.values()) == {3: 101 - 25, 4: 25}  # floor(0.25 * 101 + 0.5) = 25


@pytest.mark.parametrize("kind,value", [("records", 40), ("fraction", 0.1), ("tokens", 5_000)])
def test_whole_mix_split_keeps_prompt_groups_and_meets_the_size(kind, value):
    fs = facts(200, "a", seed=1, groups=60) + facts(100, "b", seed=2, groups=60)
    cols = columns(fs, ["a", "b"], Needs(3, prompt=True, tokens=True))
    copies = np.ones(len(fs), dtype=np.int64)
    copies[::7] = 2
    to_eval = split_eval(np.arange(len(fs)), copies, cols, Split(kind, value, False), ["a", "b"])
    weight = copies * (cols.tokens if kind == "tokens" else 1)
    size = int(weight[to_eval].sum())
    target = math.floor(value * weight.sum() + 0.5) if kind == "fraction" else value
    group = Counter()
    for w, key in zip(weight.tolist(), map(bytes, cols.prompt), strict=True):
        group[key] += w
    assert target <= size < target + max(group.values())
    by_prompt = {}
    for e, key in zip(to_eval.tolist(), map(bytes, cols.prompt), strict=True):
        assert by_prompt.setdefault(key, e) == e  # a prompt group is wholly on one side


_TAKES = st.one_of(st.just(Take()), st.builds(Take, st.just("records"), st.integers(0, 30)),
                   st.builds(Take, st.just("fraction"), st.floats(0, 1)),
                   st.builds(Take, st.just("repeat"), st.floats(1.01, 4)),
                   st.builds(Take, st.just("tokens"), st.integers(0, 900)))
_SPLITS = st.one_of(st.just(Split()), st.builds(Split, st.just("records"), st.integers(0, 20), st.booleans()),
                    st.builds(Split, st.just("fraction"), st.floats(0, 1), st.booleans()),
                    st.builds(Split, st.just("tokens"), st.integers(0, 400), st.booleans()))


@st.composite
def mixes(draw):
    """Facts of 1 to 3 sources (contents and prompts drawn from small pools, so copies and prompt
    groups happen within and across sources), their takes, a split, decontaminated prompts."""
    names = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    contents, prompts = draw(st.integers(1, 40)), draw(st.integers(1, 25))
    fs, chunk = [], 0
    for name in names:
        for _ in range(draw(st.integers(1, 3))):
            lines = sorted(draw(st.sets(st.integers(1, 500), max_size=15)))
            fs += [Fact(name, chunk, line, f"{name}-{chunk}-{line}", digest(f"c{draw(st.integers(0, contents))}"),
                        digest(f"p{draw(st.integers(0, prompts))}"), draw(st.integers(1, 60))) for line in lines]
            chunk += 1
    recipe = Recipe(draw(st.integers(0, 3)), tuple(Source(n, (), make_settings(), draw(_TAKES)) for n in names),
                    draw(_SPLITS))
    bad = {digest(f"p{i}") for i in draw(st.sets(st.integers(0, prompts), max_size=3))}
    return fs, recipe, bad, draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixes())
def test_columnar_decisions_equal_the_reference(mix):
    """Drops (decontamination, duplicates), takes, copies, the split and the per-source figures are
    those of the reference, and so is a refusal (an unmet budget or eval size)."""
    fs, recipe, bad, dedupe = mix
    try:
        expected = ref.decide(recipe, fs, bad, dedupe)
    except MixBudgetError as exc:
        expected = str(exc)
    order = frozenset(s.name for s in recipe.sources if s.take.kind != "all")
    needs = Needs(recipe.seed, order, dedupe, True, True)
    try:
        got = decide(recipe, columns(fs, recipe.names, needs), {keyed(recipe.seed, p, "eval:") for p in bad}, dedupe)
    except MixBudgetError as exc:
        assert str(exc) == expected
        return
    assert not isinstance(expected, str), expected
    routes = {(c, line): split_copies for c, route in got.routes.items() for line, split_copies in route.as_dict().items()}
    drops = {(c, line): (d.reason, d.message, d.extra) for c, lines in got.drops.items() for line, d in lines.items()}
    assert (routes, drops, got.per_source) == expected
