"""The selection rules of a mix written the straightforward way (a Python object per record,
sorted with tuples of hex strings): the reference the columnar ``sftdata.mix.select`` and
``sftdata.mix.decide`` are checked against (tests/mix/test_select.py)."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass

from sftdata.mix.recipe import Recipe, Split, Take
from sftdata.mix.select import MixBudgetError


@dataclass(frozen=True)
class Fact:
    """What the first pass learns of one valid record."""

    source: str
    chunk: int
    line: int
    id: str
    content_hash: str
    prompt_hash: str
    tokens: int

    @property
    def where(self) -> tuple[int, int]:
        return self.chunk, self.line


def keyed(seed: int, digest: str, salt: str = "") -> str:
    return hashlib.sha256(f"{seed}:{salt}{digest}".encode()).hexdigest()


def keyed_order(facts: list[Fact], seed: int) -> list[Fact]:
    return sorted(facts, key=lambda f: (keyed(seed, f.content_hash), f.chunk, f.line))


def half_up(x: float) -> int:
    return math.floor(x + 0.5)


def take_copies(facts: list[Fact], take: Take, seed: int, name: str) -> dict[tuple[int, int], int]:
    """Copies of each kept record of one source: (chunk, line) -> copies (absent: not taken)."""
    order = keyed_order(facts, seed)
    n = len(order)
    if take.kind == "all":
        return {f.where: 1 for f in order}
    if take.kind == "records":
        if take.value > n:
            raise MixBudgetError(f"source {name}: take records {int(take.value)}, but it has only {n} valid "
                                 "record(s) after rejections, duplicates and decontamination")
        return {f.where: 1 for f in order[: int(take.value)]}
    if take.kind == "fraction":
        return {f.where: 1 for f in order[: half_up(take.value * n)]}
    if take.kind == "repeat":
        whole = math.floor(take.value)
        extra = half_up((take.value - whole) * n)
        return {f.where: whole + (i < extra) for i, f in enumerate(order)}
    return _take_tokens(order, int(take.value), name)


def _take_tokens(order: list[Fact], budget: int, name: str) -> dict[tuple[int, int], int]:
    """Greedy in keyed order, skipping a record that would overflow the budget: the kept rows sum
    to at most the budget, and every record not kept is longer than what is left of it."""
    total = sum(f.tokens for f in order)
    if total < budget:
        raise MixBudgetError(f"source {name}: take tokens {budget:,}, but its valid records hold only {total:,} "
                             "token(s) in all")
    kept, used = {}, 0
    for f in order:
        if used + f.tokens <= budget:
            kept[f.where] = 1
            used += f.tokens
    return kept


def _size(facts: list[Fact], copies: dict[tuple[int, int], int], kind: str) -> int:
    return sum(copies[f.where] * (f.tokens if kind == "tokens" else 1) for f in facts)


def split_eval(facts: list[Fact], copies: dict[tuple[int, int], int], split: Split, seed: int,
               names: list[str]) -> set[str]:
    """The prompt hashes whose rows go to eval. Whole prompt groups, in keyed order of their prompt
    hash, are added while the scope's eval size is below its target (per source, or the mix)."""
    kept = [f for f in facts if f.where in copies]
    groups: dict[str, list[Fact]] = defaultdict(list)
    for f in kept:
        groups[f.prompt_hash].append(f)
    scopes = [(n, [f for f in kept if f.source == n]) for n in names] if split.per_source else [("the mix", kept)]
    chosen: set[str] = set()
    for name, members in scopes:
        whole = _size(members, copies, split.eval_kind)
        target = half_up(split.eval_value * whole) if split.eval_kind == "fraction" else int(split.eval_value)
        if target > whole:
            raise MixBudgetError(f"split eval {split.eval_kind} {split.eval_value}: {name} has only {whole:,} "
                                 f"{'token(s)' if split.eval_kind == 'tokens' else 'row(s)'} to split")
        inside = [f for f in members if f.prompt_hash in chosen]
        size = _size(inside, copies, split.eval_kind)
        for ph in sorted({f.prompt_hash for f in members} - chosen, key=lambda p: keyed(seed, p, "eval:")):
            if size >= target:
                break
            chosen.add(ph)
            size += _size([f for f in groups[ph] if f.source == name or not split.per_source], copies,
                          split.eval_kind)
    return chosen


def first_copies(facts: list[Fact]) -> dict[tuple[int, int], Fact]:
    """``dedupe: exact`` over the whole mix: (chunk, line) of each later copy -> the kept first one
    (facts come in plan order: sources in recipe order, then chunks and lines)."""
    first: dict[str, Fact] = {}
    drops = {}
    for f in facts:
        kept = first.setdefault(f.content_hash, f)
        if kept is not f:
            drops[f.where] = kept
    return drops


def decide(recipe: Recipe, facts: list[Fact], contaminated: set[str], dedupe: bool) -> tuple[dict, dict, dict]:
    """(routes: (chunk, line) -> (split, copies), drops: (chunk, line) -> (reason, message, extra),
    per source figures), as the columnar decide gives them."""
    routes, drops, per_source = {}, {}, {}
    eligible = []
    for f in facts:
        if f.prompt_hash in contaminated:
            drops[f.where] = ("contaminated", "its prompt (prompt hash) is one of a decontamination file's", {})
        else:
            eligible.append(f)
    if dedupe:
        dups = first_copies(eligible)
        for where, kept in dups.items():
            drops[where] = ("duplicate", f"exact duplicate of {kept.id} (source {kept.source})",
                            {"duplicate_of": kept.id, "duplicate_of_source": kept.source})
        eligible = [f for f in eligible if f.where not in dups]
    copies: dict[tuple[int, int], int] = {}
    for s in recipe.sources:
        mine = [f for f in eligible if f.source == s.name]
        taken = take_copies(mine, s.take, recipe.seed, s.name)
        copies.update(taken)
        per_source[s.name] = {
            "valid_records": len(mine), "take": s.take.to_json(),
            "records_taken": len(taken), "rows_taken": sum(taken.values()),
            "sampling_factor": round(sum(taken.values()) / len(mine), 6) if mine else 0.0,
            "contaminated": sum(1 for f in facts if f.source == s.name and f.prompt_hash in contaminated),
        }
    to_eval = split_eval(eligible, copies, recipe.split, recipe.seed, recipe.names) if recipe.split.enabled else set()
    for f in eligible:
        if f.where in copies:
            routes[f.where] = ("eval" if f.prompt_hash in to_eval else "train", copies[f.where])
    return routes, drops, per_source
