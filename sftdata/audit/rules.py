"""The row rules, checked over whole columns with numpy.

Why re-derive instead of trusting the writer: the audit exists to catch the writer's own bugs (a
shifted label, a trained header, an eot left out), so nothing it stored per row is believed. The
turn structure is rebuilt from the token ids alone.

How it stays fast: control tokens are rare, so one comparison pass finds them all and everything
structural is computed on those few positions. Every ``<|start_header_id|>`` (and every
conversation start) opens a *unit*; ``searchsorted`` of the ``<|end_header_id|>`` and closing-token
positions against the unit bounds gives each unit its header, role, content span and closer. One
cumulative sum of the trained mask then answers "how many trained tokens in this span" for rows,
conversations, units and content spans alike. Only a handful of passes touch every token (the
label checks themselves); Python loops only over distinct role-token tuples and over the (capped)
violations it lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sftdata.audit import pitfalls
from sftdata.audit.arrays import align, first_and_count, first_per_group, member, unique_inverse
from sftdata.audit.report import ROLE_NAMES, RowStats, Violations
from sftdata.audit.slice_view import ASSISTANT, MAX_ROLE_TOKENS, OTHER, UNKNOWN, RuleContext, SliceView
from sftdata.constants import IGNORE_INDEX

_TURN_PROBLEMS = (
    "tokens outside any turn",
    "header has no <|end_header_id|>",
    "header has more than one <|end_header_id|>",
    "empty role in header",
    "unknown role {role}",
    "<|end_header_id|> not followed by the header newline",
    "turn not closed by <|eot_id|> or <|eom_id|>",
    "tokens after the closing token of a turn",
    "conversation has no turns",
)


def _roles(v: SliceView, start: np.ndarray, eh: np.ndarray, turn: np.ndarray, has_eh: np.ndarray,
           trunc: np.ndarray) -> np.ndarray:
    """Role code per unit, decoding each distinct tuple of role-token ids once (cached)."""
    ids, n = v.ids, v.n
    # a header the truncation cut before <|end_header_id|> has no role to know: "other", not "unknown"
    role = np.where(turn & (has_eh | ~trunc), UNKNOWN, OTHER).astype(np.int8)
    width = np.where(has_eh, eh - start - 1, 0)
    cand = np.flatnonzero(has_eh & (width >= 1) & (width <= MAX_ROLE_TOKENS))
    if not cand.size:
        return role
    width = width[cand]
    cols = [np.where(width > j, ids[np.minimum(start[cand] + 1 + j, n - 1)].astype(np.int64), -1)
            for j in range(int(width.max()))]
    base = max(int(c.max()) for c in cols) + 2
    if min(int(c.min()) for c in cols) >= -1 and len(cols) * np.log2(base) < 62:
        keys = sum((c + 1) * base**j for j, c in enumerate(cols))  # one int64 per tuple: a fast 1-D sort
    else:
        keys = np.stack(cols, axis=1)
    if keys.ndim == 1:
        first, inverse = unique_inverse(keys)
    else:  # tuples too wide for one int64 (unique_inverse sorts 1-D keys only)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    codes = [v.ctx.role_code(tuple(int(cols[j][f]) for j in range(int(width[f])))) for f in first]
    role[cand] = np.asarray(codes, np.int8)[inverse]
    return role


def _units(v: SliceView) -> None:
    """Split conversations into units (a preamble, then one per header); derive each turn's role,
    content span and closing token from the sparse control-token positions; report malformed turns."""
    ctx, ids, n = v.ctx, v.ids, v.n
    nl = ctx.header_newline_ids
    sp = np.flatnonzero(ids >= min(ctx.bos_id, ctx.start_header_id, ctx.end_header_id, *ctx.closer_ids))
    spv = ids[sp]
    v.sp = sp
    v.bos_pos = sp[spv == ctx.bos_id]
    v.conv_starts = v.seg_start[:-1][v.seg_len > 0]
    start = np.concatenate([sp[spv == ctx.start_header_id], v.conv_starts])
    start.sort(kind="stable")
    start = v.u_start = start[np.concatenate([[True], start[1:] != start[:-1]])]
    end = v.u_end = np.append(start[1:], n)
    seg = v.u_seg = v.seg_at(start)
    turn = v.u_turn = ids[start] == ctx.start_header_id
    trunc = v.u_trunc = (end == v.seg_start[seg] + v.seg_len[seg]) & v.seg_trunc[seg]
    eh, n_eh = first_and_count(sp[spv == ctx.end_header_id], start, end, n)
    close, n_close = first_and_count(sp[np.logical_or.reduce([spv == c for c in ctx.closer_ids])], start, end, n)
    has_eh = turn & (n_eh > 0)
    nl_ok = has_eh.copy()
    for j, tok in enumerate(nl):
        nl_ok &= (eh + 1 + j < end) & (ids[np.minimum(eh + 1 + j, n - 1)] == tok)
    cs = v.u_cs = np.where(has_eh, np.minimum(eh + 1 + np.where(nl_ok, len(nl), 0), end), end)
    closed = v.u_closed = (n_close > 0) & (close >= cs)
    v.u_ce = np.where(closed, close, end)
    v.u_close = np.where(closed, close, -1)
    role = v.u_role = _roles(v, start, eh, turn, has_eh, trunc)
    n_turns = np.bincount(seg[turn], minlength=len(v.seg_len))
    v.seg_plain = (n_turns == 0) & (v.seg_len > 0) & ctx.allow_plain
    plain = v.u_plain = ~turn & v.seg_plain[seg]
    width = np.where(has_eh, eh - start - 1, 0)
    # reported by pitfalls under their own names: BOS BOS at the start, a last answer cut unclosed
    dbl = v.u_dbl = ~turn & (end - start > 1) & (ids[start] == ctx.bos_id) & (ids[np.minimum(start + 1, n - 1)] == ctx.bos_id)
    last = end == v.seg_start[seg] + v.seg_len[seg]
    cut = v.u_cut = turn & last & (role == ASSISTANT) & nl_ok & (n_eh == 1) & (n_close == 0) & ~trunc
    problems = [  # (condition, flat position), first match wins; order follows _TURN_PROBLEMS
        (~turn & ~plain & (end - start > 1 + dbl), start + 1 + dbl),
        (turn & (n_eh == 0) & ~trunc, start),
        (n_eh > 1, start),
        (has_eh & (width == 0), eh),
        (has_eh & (width > 0) & (role == UNKNOWN), start + 1),
        (has_eh & ~nl_ok & ~(trunc & (eh + len(nl) >= end)), np.minimum(eh + 1, end - 1)),
        (turn & (n_close == 0) & ~trunc & ~cut, end - 1),
        (turn & (n_close > 0) & ((n_close > 1) | (close != end - 1)), np.minimum(close + 1, end - 1)),
    ]
    code = np.select([c for c, _ in problems], np.arange(1, len(problems) + 1), 0)
    pos = np.select([c for c, _ in problems], [p for _, p in problems], 0)
    bad = np.flatnonzero(code > 0)
    segs, first, _ = first_per_group(bad, seg[bad])

    def turn_message(k: int, s: int) -> str:
        u = int(first[k])
        return _TURN_PROBLEMS[code[u] - 1].format(role=ctx.text(ids[start[u] + 1: eh[u]]))

    v.emit_segs("well_formed_turns", segs, turn_message, lambda k, s: int(pos[first[k]]))
    no_turns = np.flatnonzero((n_turns == 0) & (v.seg_len > 0) & ~v.seg_plain)
    v.emit_segs("well_formed_turns", no_turns, lambda k, s: _TURN_PROBLEMS[-1])


def _check_packing(v: SliceView) -> None:
    """position_ids restart at 0 at every conversation and count up; the row id is the first packed id."""
    pos, plens = v.cols["position_ids"]
    aligned, same = align(pos, plens, v.lens, -1)
    v.emit_rows("packing", np.flatnonzero(~same), lambda r: f"{plens[r]} position_ids for {v.lens[r]} tokens")
    expect = np.arange(v.n) - np.repeat(v.seg_start[:-1], v.seg_len)
    v.emit_positions("packing", np.flatnonzero((same & v.seq_good)[v.row_of] & (aligned != expect)), lambda p, c: (
        f"position_ids do not restart at 0 and count up per conversation: {aligned[p]} where "
        f"{expect[p]} belongs ({c} wrong)"))
    ok = np.flatnonzero(v.pid_ok & (v.seg_count > 0))
    if ok.size:
        first_ids = pc.take(v.cols["packed_ids"][0], pa.array(v.pid_start[ok]))
        differ = pc.not_equal(pc.take(v.cols["id"], pa.array(ok)), first_ids).fill_null(True)
        v.emit_rows("packing", ok[differ.to_numpy(zero_copy_only=False)],
                    lambda r: "row id is not the first packed conversation's id")


def _assistant_turns(v: SliceView, trained: np.ndarray, cum: np.ndarray, stats: RowStats) -> None:
    """Per unit: tokens by role, trained tokens outside assistant content, partly trained answers."""
    ids, ctx = v.ids, v.ctx
    start, end, cs, ce, closed = v.u_start, v.u_end, v.u_cs, v.u_ce, v.u_closed
    assistant = v.u_turn & (v.u_role == ASSISTANT)
    unit_trained = cum[end] - cum[start]
    closer_trained = assistant & closed & trained[np.maximum(v.u_close, 0)]
    allowed_trained = (np.where(assistant, cum[ce] - cum[cs], 0) + closer_trained
                       + np.where(v.u_plain, cum[end] - cum[np.minimum(start + 1, end)], 0))
    allowed = np.where(assistant, ce - cs + closed, 0)
    stats.role_tokens += np.bincount(v.u_role, weights=end - start, minlength=len(ROLE_NAMES)).astype(np.int64)
    stats.role_trained += np.bincount(v.u_role, weights=unit_trained, minlength=len(ROLE_NAMES)).astype(np.int64)
    stats.role_turns += np.bincount(v.u_role[v.u_turn], minlength=len(ROLE_NAMES))
    pp = pitfalls.prompt_and_pad(v, trained, cum)  # prompt and padding tokens: their own rules
    outside = unit_trained - allowed_trained - pp.prompt_trained - pp.pad_outside
    bad = np.flatnonzero(outside > 0)
    segs, first, _ = first_per_group(bad, v.u_seg[bad])
    per_seg = np.bincount(v.u_seg, weights=outside, minlength=len(v.seg_len)).astype(np.int64)

    def first_outside(k: int, s: int) -> int:
        u = int(first[k])
        lo, hi = int(start[u]), int(end[u])
        mask = trained[lo:hi].copy()
        if assistant[u]:
            mask[cs[u] - lo: ce[u] - lo + int(closed[u])] = False  # content, and the closer if any
        elif v.u_plain[u]:
            mask[1:] = False  # a plain conversation: only its BOS is never trained
        elif pp.prompt[u]:
            mask[cs[u] - lo: ce[u] - lo + int(closed[u])] = False
        pads = pp.pad_outside_pos
        mask[pads[(pads >= lo) & (pads < hi)] - lo] = False
        return lo + int(np.argmax(mask))

    v.emit_segs("trained_outside_assistant", segs, lambda k, s: (
        f"{per_seg[s]} trained token(s) outside assistant content, first "
        f"{ctx.text(ids[first_outside(k, s)])} in the {v.zone(first_outside(k, s))}"), first_outside)
    eot = pitfalls.eot_untrained(v, trained, cum, assistant)
    bad = np.flatnonzero(assistant & ~v.u_trunc & ~eot & (allowed_trained > 0) & (allowed_trained < allowed))
    segs, first, _ = first_per_group(bad, v.u_seg[bad])

    def first_untrained(k: int, s: int) -> int:
        u = int(first[k])
        lo, hi = int(cs[u]), int(ce[u] + closed[u])
        return lo + int(np.argmin(trained[lo:hi]))

    v.emit_segs("assistant_turn_whole", segs, lambda k, s: (
        f"assistant turn partly trained: {allowed_trained[first[k]]} of {allowed[first[k]]} content and "
        "closing tokens (position: the first untrained one)"), first_untrained)


def check_slice(cols: dict[str, Any], first_row: int, shard: str, ctx: RuleContext, sink: Violations,
                packed: bool) -> RowStats:
    """All row rules over one slice of rows; returns what the slice adds to the statistics."""
    v = SliceView(cols, first_row, shard, ctx, sink, packed)
    ids, lens, n = v.ids, v.lens, v.n
    labs_raw, llens = cols["labels"]
    labs, same = align(labs_raw, llens, lens, IGNORE_INDEX)
    v.emit_rows("labels_length", np.flatnonzero(~same), lambda r: f"{llens[r]} labels for {lens[r]} input_ids")
    if packed:
        _check_packing(v)
    if ctx.max_length:
        v.emit_rows("max_length", np.flatnonzero(lens > ctx.max_length),
                    lambda r: f"{lens[r]} tokens, more than max_length {ctx.max_length}")
    trained = labs != IGNORE_INDEX
    cum = np.zeros(n + 1, np.int32)  # trained tokens in [a, b) = cum[b] - cum[a], for any span
    np.cumsum(trained, dtype=np.int32, out=cum[1:])
    stats = RowStats(rows=v.n_rows, conversations=len(v.seg_len), tokens=n,
                     trained_tokens=int(cum[-1] if same.all() else np.count_nonzero(labs_raw != IGNORE_INDEX)),
                     truncated_rows=int(np.count_nonzero(np.bincount(v.seg_row[v.seg_trunc], minlength=v.n_rows))))
    stats.shape.add(lens, cum[v.row_start[1:]] - cum[v.row_start[:-1]])
    v.emit_segs("single_bos", np.flatnonzero(v.seg_len == 0), lambda k, s: "empty conversation: no tokens")
    # a row whose labels do not line up is reported once, as labels_length, not also as untrained
    v.emit_segs("row_has_trained_tokens", np.flatnonzero((cum[v.seg_start[1:]] == cum[v.seg_start[:-1]])
                                                         & same[v.seg_row]),
                lambda k, s: "no trained token: the conversation teaches the model nothing")
    if n == 0:
        return stats
    out_of_vocab = ids.view(np.dtype(f"u{ids.dtype.itemsize}")) >= ctx.vocab_size if ids.dtype.kind == "i" else (
        (ids < 0) | (ids >= ctx.vocab_size))
    v.emit_positions("token_range", np.flatnonzero(out_of_vocab),
                     lambda p, c: f"{c} id(s) outside the vocabulary of {ctx.vocab_size}, first {ids[p]}")
    _units(v)
    second = v.u_start[v.u_dbl] + 1  # the second BOS of BOS BOS is double_bos, not single_bos
    bad_bos = np.concatenate([v.conv_starts[~member(v.conv_starts, v.bos_pos)],
                              v.bos_pos[~member(v.bos_pos, v.conv_starts) & ~member(v.bos_pos, second)]])
    bad_bos.sort()
    v.emit_positions("single_bos", bad_bos, lambda p, c: (
        "extra <|begin_of_text|> inside the conversation" if ids[p] == ctx.bos_id
        else f"conversation starts with {ctx.text(ids[p])}, not <|begin_of_text|>"))
    v.emit_positions("label_matches_input", np.flatnonzero(trained & (labs != ids)), lambda p, c: (
        f"{c} label(s) differ from input_ids, first label {labs[p]} where the input is {ids[p]}"
        + (" (labels shifted by one?)" if p + 1 < n and labs[p] == ids[p + 1] else "")))
    _assistant_turns(v, trained, cum, stats)
    pitfalls.structure(v)
    pitfalls.collect_dates(v)
    return stats
