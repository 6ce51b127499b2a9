"""The driver's decisions of a mix, from the first pass: what is dropped, what is taken (how many
times), which side of the split each row goes to, and the accounting of it per source and split.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from sftdata.mix.facts import Facts, Needs
from sftdata.mix.recipe import Recipe
from sftdata.mix.select import first_copies, split_eval, take_copies
from sftdata.process.chunk import ChunkResult
from sftdata.stages.read.jsonl import Chunk

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Drop:
    """A valid record the mix quarantines: ``duplicate`` (dedupe across the mix) or ``contaminated``."""

    reason: str
    message: str
    extra: dict = field(default_factory=dict)


@dataclass
class Route:
    """A chunk's taken records: their lines (ascending), copies and side of the split."""

    lines: np.ndarray  # int64
    copies: np.ndarray  # int32, at least 1
    to_eval: np.ndarray  # bool

    def as_dict(self) -> dict[int, tuple[str, int]]:
        """line -> (split, copies)."""
        return {line: ("eval" if e else "train", c) for line, c, e in
                zip(self.lines.tolist(), self.copies.tolist(), self.to_eval.tolist(), strict=True)}


@dataclass
class Decision:
    routes: dict[int, Route] = field(default_factory=dict)  # chunk -> its taken records
    drops: dict[int, dict[int, Drop]] = field(default_factory=dict)  # chunk -> line -> why
    per_source: dict[str, dict] = field(default_factory=dict)  # the selection's own figures
    digests: dict[int, str] = field(default_factory=dict)  # chunk -> its input's digest (the first pass's)
    needs: Needs | None = None  # what the first pass staged with (``Needs.drops``: the records' lines kept)


def decide(recipe: Recipe, facts: Facts, contaminated: set[bytes], dedupe: bool) -> Decision:
    """Drops (decontamination, then ``dedupe: exact`` across the mix), takes and the split.
    ``contaminated``: the prompt keys of the decontamination files' records (``facts.keyed``)."""
    out = Decision()
    eligible = np.ones(len(facts), dtype=bool)
    bad = np.zeros(len(facts), dtype=bool)
    if contaminated:
        keys = np.frombuffer(b"".join(sorted(contaminated)), dtype=np.uint8).reshape(-1, 32)
        bad = np.isin(np.ascontiguousarray(facts.prompt).view("V32").ravel(), keys.view("V32").ravel())
        for i in np.flatnonzero(bad).tolist():
            _drop(out, facts, i, Drop("contaminated", "its prompt (prompt hash) is one of a decontamination file's"))
        eligible &= ~bad
    if dedupe:
        later, kept = first_copies(np.flatnonzero(eligible), facts)
        for i, k in zip(later.tolist(), kept.tolist(), strict=True):
            kid, ksource = facts.id_of(k), recipe.names[facts.source[k]]
            _drop(out, facts, i, Drop("duplicate", f"exact duplicate of {kid} (source {ksource})",
                                      {"duplicate_of": kid, "duplicate_of_source": ksource}))
        eligible[later] = False
    copies = np.zeros(len(facts), dtype=np.int64)
    for place, s in enumerate(recipe.sources):
        mine = facts.source == place
        idx = np.flatnonzero(eligible & mine)
        taken = take_copies(idx, facts, s.take, s.name)
        copies[idx] = taken
        rows = int(taken.sum())
        out.per_source[s.name] = {
            "valid_records": len(idx), "take": s.take.to_json(),
            "records_taken": int(np.count_nonzero(taken)), "rows_taken": rows,
            "sampling_factor": round(rows / len(idx), 6) if len(idx) else 0.0,
            "contaminated": int(np.count_nonzero(bad & mine)),
        }
    kept = np.flatnonzero(copies)
    to_eval = np.zeros(len(facts), dtype=bool)
    if recipe.split.enabled:
        to_eval[kept] = split_eval(kept, copies, facts, recipe.split, recipe.names)
    _routes(out, facts, kept, copies, to_eval)
    return out


def _drop(out: Decision, facts: Facts, i: int, drop: Drop) -> None:
    out.drops.setdefault(int(facts.chunk[i]), {})[int(facts.lines[i])] = drop


def _routes(out: Decision, facts: Facts, kept: np.ndarray, copies: np.ndarray, to_eval: np.ndarray) -> None:
    """Each chunk's slice of the taken records (``kept`` ascending: chunk by chunk, lines ascending)."""
    chunks, starts = np.unique(facts.chunk[kept], return_index=True)
    ends = [*starts[1:].tolist(), len(kept)] if len(kept) else []
    for c, a, b in zip(chunks.tolist(), starts.tolist(), ends, strict=True):
        rows = kept[a:b]
        out.routes[c] = Route(facts.lines[rows], copies[rows].astype(np.int32), to_eval[rows])


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

