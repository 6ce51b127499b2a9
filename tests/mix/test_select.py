"""The selection rules of a mix as pure functions (docs/mixing.md): budgets, repeats, the split."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from sftdata.mix.recipe import Split, Take
from sftdata.mix.select import Fact, MixBudgetError, split_eval, take_copies


def facts(n: int, source: str = "a", seed: int = 0, groups: int | None = None) -> list[Fact]:
    r = random.Random(seed)
    base = 0 if source == "a" else 10_000  # (chunk, line) stay unique across sources
    return [Fact(source, base + i // 10, i % 10 + 1, f"{source}{i}", f"{source}-c{i}",
                 f"p{r.randrange(groups)}" if groups else f"{source}-p{i}", r.randint(5, 400)) for i in range(n)]


@pytest.mark.parametrize("seed", range(8))
def test_token_budget_definition_holds(seed):
    fs = facts(300, seed=seed)
    budget = random.Random(seed).randint(1_000, 50_000)
    kept = take_copies(fs, Take("tokens", budget), seed, "a")
    used = sum(f.tokens for f in fs if f.where in kept)
    assert used <= budget
    assert all(f.tokens > budget - used for f in fs if f.where not in kept)


def test_token_budget_above_the_source_is_refused():
    fs = facts(10)
    with pytest.raises(MixBudgetError, match="only"):
        take_copies(fs, Take("tokens", sum(f.tokens for f in fs) + 1), 0, "a")


def test_selection_ignores_input_order_and_follows_the_seed():
    fs = facts(200)
    shuffled = fs[:]
    random.Random(5).shuffle(shuffled)
    for take in (Take("records", 50), Take("fraction", 0.3), Take("repeat", 1.7), Take("tokens", 9_000)):
        assert take_copies(fs, take, 1, "a") == take_copies(shuffled, take, 1, "a")
        assert take_copies(fs, take, 1, "a") != take_copies(fs, take, 2, "a")


def test_repeat_counts():
    copies = take_copies(facts(101), Take("repeat", 3.25), 4, "a")
    assert Counter(copies.values()) == {3: 101 - 25, 4: 25}  # floor(0.25 * 101 + 0.5) = 25


@pytest.mark.parametrize("kind,value", [("records", 40), ("fraction", 0.1), ("tokens", 5_000)])
def test_whole_mix_split_keeps_prompt_groups_and_meets_the_size(kind, value):
    fs = facts(200, "a", seed=1, groups=60) + facts(100, "b", seed=2, groups=60)
    copies = {f.where: 1 for f in fs}
    copies.update({f.where: 2 for f in fs[::7]})
    chosen = split_eval(fs, copies, Split(kind, value, False), 3, ["a", "b"])
    weight = (lambda f: copies[f.where] * f.tokens) if kind == "tokens" else (lambda f: copies[f.where])
    size = sum(weight(f) for f in fs if f.prompt_hash in chosen)
    target = math.floor(value * sum(weight(f) for f in fs) + 0.5) if kind == "fraction" else value
    groups = Counter()
    for f in fs:
        groups[f.prompt_hash] += weight(f)
    assert target <= size < target + max(groups.values())
