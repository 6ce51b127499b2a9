"""Named rules for the mask bugs that other tools produce, each with its own name and cause.

Why separate rules: the general rules would catch most of these (a trained user token is outside
assistant content, an untrained ``<|eot_id|>`` leaves the turn partly trained), but under a name
that sends the reader hunting. A CI line that says ``prompt_trained`` or ``eot_trained`` names the
collator bug at once. Each case found here is taken *out* of the general rule in ``rules.py``, so
one defect is one violation under one name.

Like ``rules.py`` everything is vectorised over the slice's units; the only Python loops are over
violations listed, and (for the Llama-3.2 date) over the distinct system-header prefixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sftdata.audit.arrays import member

if TYPE_CHECKING:
    from sftdata.audit.report import Violations
    from sftdata.audit.slice_view import RuleContext, SliceView

ASSISTANT = 3
PROMPT_ROLES = (1, 2, 4, 5)  # system, user, ipython, tool (report.ROLE_NAMES)
DATE_WINDOW = 32  # tokens of a system turn searched for the "Today Date:" line
DATE_TAIL = 8  # the block's last tokens, which hold the date: blocks alike here need no decoding
_DATE = re.compile(r"Today Date:[ \t]*([^\n]*)")


@dataclass(frozen=True)
class PromptAndPad:
    """Per unit: prompt-content tokens trained and padding trained outside any content."""

    prompt: np.ndarray  # bool per unit: a system/user/tool turn
    prompt_trained: np.ndarray  # per unit
    pad_outside: np.ndarray  # per unit: trained padding outside content (left out of trained_outside_assistant)
    pad_outside_pos: np.ndarray  # sorted flat positions of those


def prompt_and_pad(v: SliceView, trained: np.ndarray, cum: np.ndarray) -> PromptAndPad:
    """``prompt_trained``: any trained token in the content or closer of a system, user or tool
    turn (HF ``DataCollatorForLanguageModeling`` trains everything). ``pad_trained``: a trained
    pad id (``<|finetune_right_pad_id|>``, ``<|end_of_text|>``), or a closing token repeated after
    a turn's own closer (padding with pad = eos), i.e. padding whose labels were copied from
    ``input_ids`` before it was masked. A plain conversation's trained end token (prompt/completion
    records with an EOS) is a target, not padding."""
    ctx, ids = v.ctx, v.ids
    start, cs, ce, closed = v.u_start, v.u_cs, v.u_ce, v.u_closed
    zone_end = ce + closed
    prompt = v.u_turn & np.isin(v.u_role, PROMPT_ROLES)
    prompt_n = np.where(prompt, cum[zone_end] - cum[cs], 0)
    lowest = min(ctx.bos_id, ctx.start_header_id, ctx.end_header_id, *ctx.closer_ids)
    pads = np.asarray(sorted(ctx.pad_ids), ids.dtype)
    pool = v.sp  # pads and closers are special tokens: among the sparse positions, as a rule
    if pads.size and pads[0] < lowest:  # a tokenizer whose pad id sorts below its control tokens
        pool = np.union1d(pool, np.flatnonzero(member(ids, pads)))
    cand = pool[trained[pool]]
    u = np.searchsorted(start, cand, "right") - 1
    vals = ids[cand]
    closers = np.asarray(sorted(ctx.closer_ids), ids.dtype)
    is_pad = (member(vals, pads) | (member(vals, closers) & closed[u] & (cand > v.u_close[u]))) & ~v.u_plain[u]
    in_zone = v.u_turn[u] & (cand >= cs[u]) & (cand < zone_end[u])
    pad_pos = cand[is_pad]
    v.emit_positions("pad_trained", pad_pos, lambda p, c: (
        f"{c} padding token(s) trained, first {ctx.text(ids[p])} (labels copied from input_ids "
        "before the padding was masked?)"))
    out = is_pad & ~in_zone
    pad_outside = np.bincount(u[out], minlength=len(start)).astype(np.int64)
    bad = np.flatnonzero(prompt_n > 0)
    segs, first = _first_unit_per_seg(v, bad)

    def first_pos(k: int) -> int:
        w = int(first[k])
        lo = int(cs[w])
        return lo + int(np.argmax(trained[lo:int(zone_end[w])]))

    per_seg = np.bincount(v.u_seg, weights=prompt_n, minlength=len(v.seg_len)).astype(np.int64)
    v.emit_segs("prompt_trained", segs, lambda k, s: (
        f"{per_seg[s]} prompt token(s) trained, first {ctx.text(ids[first_pos(k)])} in the "
        f"{v.zone(first_pos(k))} (labels copied from input_ids, or masked only up to the first answer?)"),
        lambda k, s: first_pos(k))
    return PromptAndPad(prompt, prompt_n, pad_outside, cand[out])


def eot_untrained(v: SliceView, trained: np.ndarray, cum: np.ndarray, assistant: np.ndarray) -> np.ndarray:
    """``eot_trained``: an assistant turn whose content is trained whole but whose closing token
    is not; the model never learns to stop. Returns those units (assistant_turn_whole skips them)."""
    cs, ce = v.u_cs, v.u_ce
    whole = (cum[ce] - cum[cs]) == (ce - cs)
    bad = assistant & v.u_closed & ~v.u_trunc & (ce > cs) & whole & ~trained[np.maximum(v.u_close, 0)]
    segs, first = _first_unit_per_seg(v, np.flatnonzero(bad))
    v.emit_segs("eot_trained", segs, lambda k, s: (
        f"the trained assistant turn's closing {v.ctx.text(v.ids[v.u_close[first[k]]])} is not trained: the "
        "model never learns to stop (pad token = eos, masked with the padding?)"),
        lambda k, s: int(v.u_close[first[k]]))
    return bad


def structure(v: SliceView) -> None:
    """``double_bos`` and ``turn_cut_off``, whose units ``rules._units`` marked."""
    segs, first = _first_unit_per_seg(v, np.flatnonzero(v.u_dbl))
    v.emit_segs("double_bos", segs, lambda k, s: (
        "two <|begin_of_text|> at the start: the template adds one and tokenizing with "
        "add_special_tokens=True another"), lambda k, s: int(v.u_start[first[k]] + 1))
    segs, first = _first_unit_per_seg(v, np.flatnonzero(v.u_cut))
    v.emit_segs("turn_cut_off", segs, lambda k, s: (
        f"cut before its last assistant turn closes: {v.u_end[first[k]] - v.u_cs[first[k]]} content token(s) "
        "and no closing token (truncated to a maximum length instead of dropped?)"),
        lambda k, s: int(v.u_end[first[k]] - 1))


def collect_dates(v: SliceView) -> None:
    """Remember the first line block (up to the header newline) of each conversation's first system
    turn, as token ids, in ``ctx.dates``. Decoding waits for ``finish_dates`` and happens only when
    the blocks differ at all: decoding the date's tokens loads the tokenizer's ranks (0.2 s)."""
    ctx, ids = v.ctx, v.ids
    nl = ctx.header_newline_ids
    sysu = np.flatnonzero(v.u_turn & (v.u_role == 1) & (v.u_ce > v.u_cs))
    if not sysu.size or len(nl) != 1:
        return
    _, sysu = _first_unit_per_seg(v, sysu)  # each conversation's first system turn
    cs, ce = v.u_cs[sysu], v.u_ce[sysu]
    grid = cs[:, None] + np.arange(DATE_WINDOW)
    inside = grid < ce[:, None]
    win = np.where(inside, ids[np.minimum(grid, v.n - 1)].astype(np.int64), -1)
    stop = np.where(inside & (win == nl[0]), np.arange(DATE_WINDOW), DATE_WINDOW).min(axis=1)
    win = np.where(np.arange(DATE_WINDOW) < stop[:, None], win, -1)
    if bool((win == win[0]).all()):  # the usual case, one header for every conversation: no row sort
        keys, inverse = win[:1], np.zeros(len(win), dtype=np.intp)
    else:
        keys, inverse = np.unique(win, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
    for k, key in enumerate(keys):
        entry = ctx.dates.setdefault(tuple(int(x) for x in key if x >= 0), [0, []])
        members = np.flatnonzero(inverse == k)
        entry[0] += len(members)
        for j in members[:max(0, v.sink.max_per_rule - len(entry[1]))]:
            s = int(v.u_seg[sysu[j]])
            r = int(v.seg_row[s])
            entry[1].append((v.seg_id(s), v.shard, v.first_row + r, int(cs[j] - v.row_start[r])))


def finish_dates(ctx: RuleContext, sink: Violations) -> None:
    """``date_consistent``: one violation per conversation whose "Today Date:" is not the most common."""
    if len({key[-DATE_TAIL:] for key in ctx.dates}) < 2:
        return  # the blocks end alike ("...Today Date: 26 Jul 2024"): one date at most
    dates: dict[str, list] = {}
    for key, (count, listed) in ctx.dates.items():
        m = _DATE.search(ctx.text_raw(list(key)))
        if m:
            entry = dates.setdefault(m.group(1).strip(), [0, []])
            entry[0] += count
            entry[1] += listed
    if len(dates) < 2:
        return
    total = sum(n for n, _ in dates.values())
    major = max(dates, key=lambda d: dates[d][0])  # ties: the first seen
    for date, (count, listed) in dates.items():
        if date == major:
            continue
        msg = (f"Today Date {date!r} where {dates[major][0]} of {total} conversations have {major!r} "
               f"({len(dates)} dates: data rendered on different days does not reproduce)")
        listed = sorted(listed, key=lambda x: (str(x[1]), x[2]))[:sink.room("date_consistent")]
        for rid, shard, row, pos in listed:
            sink.add("date_consistent", msg, id=rid, shard=shard, row=row, position=pos)
        if count > len(listed):
            sink.counts["date_consistent"] += count - len(listed)


def _first_unit_per_seg(v: SliceView, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted unit indices: each conversation hit and its first such unit."""
    if not units.size:
        return units, units
    segs = v.u_seg[units]
    new = np.concatenate([[True], segs[1:] != segs[:-1]])
    return segs[new], units[new]
