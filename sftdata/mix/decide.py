"""The driver's decisions of a mix, from the first pass: what is dropped, what is taken (how many
times), which side of the split each row goes to, and the accounting of it per source and split.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sftdata.mix.chunk import Drop
from sftdata.mix.recipe import Recipe
from sftdata.mix.select import Fact, first_copies, split_eval, take_copies
from sftdata.process.chunk import ChunkResult
from sftdata.stages.read.jsonl import Chunk

SPLITS = ("train", "eval")


@dataclass
class Decision:
    routes: dict[int, dict[int, tuple[str, int]]] = field(default_factory=dict)  # chunk -> line -> (split, copies)
    drops: dict[int, dict[int, Drop]] = field(default_factory=dict)
    per_source: dict[str, dict] = field(default_factory=dict)  # the selection's own figures


def decide(recipe: Recipe, facts: list[Fact], contaminated: set[str], dedupe: bool) -> Decision:
    """Drops (decontamination, then ``dedupe: exact`` across the mix), takes and the split."""
    out = Decision()
    reason = "contaminated"  # a reason code (sftdata.stages.reasons)
    eligible = []
    for f in facts:
        if f.prompt_hash in contaminated:
            out.drops.setdefault(f.chunk, {})[f.line] = Drop(
                reason, "its prompt (prompt hash) is one of a decontamination file's")
        else:
            eligible.append(f)
    if dedupe:
        dups = first_copies(eligible)
        for where, kept in dups.items():
            out.drops.setdefault(where[0], {})[where[1]] = Drop(
                "duplicate", f"exact duplicate of {kept.id} (source {kept.source})",
                {"duplicate_of": kept.id, "duplicate_of_source": kept.source})
        eligible = [f for f in eligible if f.where not in dups]
    copies: dict[tuple[int, int], int] = {}
    for s in recipe.sources:
        mine = [f for f in eligible if f.source == s.name]
        taken = take_copies(mine, s.take, recipe.seed, s.name)
        copies.update(taken)
        out.per_source[s.name] = {
            "valid_records": len(mine), "take": s.take.to_json(),
            "records_taken": len(taken), "rows_taken": sum(taken.values()),
            "sampling_factor": round(sum(taken.values()) / len(mine), 6) if mine else 0.0,
            "contaminated": sum(1 for f in facts if f.source == s.name and f.prompt_hash in contaminated),
        }
    to_eval = split_eval(eligible, copies, recipe.split, recipe.seed, recipe.names) if recipe.split.enabled else set()
    for f in eligible:
        if f.where in copies:
            side = "eval" if f.prompt_hash in to_eval else "train"
            out.routes.setdefault(f.chunk, {})[f.line] = (side, copies[f.where])
    return out


def accounting(recipe: Recipe, decision: Decision, chunks: list[Chunk],
               results: dict[str, list[ChunkResult]]) -> dict:
    """Per source and split: records read, rejected by reason, duplicates removed, rows, tokens,
    trained tokens, sampling factor, budget asked vs delivered (the manifest's ``mix``)."""
    source_of = {c.index: c.source for c in chunks}
    per: dict[str, dict] = {n: {"splits": {}} for n in recipe.names}
    for split, res_list in results.items():
        sums: dict[str, dict] = defaultdict(lambda: {"rows": 0, "tokens": 0, "trained_tokens": 0})
        for res in res_list:
            row = sums[source_of[res.index]]
            row["rows"] += res.records_written
            row["tokens"] += res.tokens
            row["trained_tokens"] += res.trained_tokens
            if split == "train" or len(results) == 1:
                entry = per[source_of[res.index]]
                entry.setdefault("_rejected", defaultdict(int))
                for reason, n in res.rejected.items():
                    entry["_rejected"][reason] += n
                entry["_read"] = entry.get("_read", 0) + res.records_read - res.records_written
        for name in recipe.names:
            per[name]["splits"][split] = dict(sums[name])
    for s in recipe.sources:
        entry = per[s.name]
        sel = decision.per_source[s.name]
        rejected = dict(sorted(entry.pop("_rejected", {}).items()))
        quarantined = entry.pop("_read", 0)
        delivered = {k: sum(v[k] for v in entry["splits"].values()) for k in ("rows", "tokens", "trained_tokens")}
        entry.update({
            "records_read": sel["valid_records"] + sel["contaminated"] + rejected.get("duplicate", 0)
            + sum(n for r, n in rejected.items() if r not in ("duplicate", "contaminated")),
            "rejected": rejected, "duplicates_removed": rejected.get("duplicate", 0),
            "quarantined": quarantined, "records_not_taken": sel["valid_records"] - sel["records_taken"],
            "sampling_factor": sel["sampling_factor"], "budget": _budget(s.take, delivered), **delivered,
        })
    return {"seed": recipe.seed, "sources": per}


def _budget(take, delivered: dict) -> dict:
    if take.kind == "tokens":
        return {"asked": {"tokens": take.value}, "delivered": {"tokens": delivered["tokens"]}}
    if take.kind == "records":
        return {"asked": {"records": take.value}, "delivered": {"records": delivered["rows"]}}
    return {"asked": take.to_json(), "delivered": {"rows": delivered["rows"]}}

