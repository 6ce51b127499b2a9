"""What the row rules look at: the rules' context (token ids, settings, decoded roles) and one slice
of rows as flat numpy columns with offsets, with the positions of the control tokens found once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sftdata.audit.arrays import first_per_group, offsets
from sftdata.audit.report import ROLE_NAMES, Violations

OTHER, ASSISTANT, UNKNOWN = 0, 3, 6
KNOWN_ROLES = {name: code for code, name in enumerate(ROLE_NAMES) if 0 < code < UNKNOWN}
MAX_ROLE_TOKENS = 8


@dataclass
class RuleContext:
    """Token ids and settings the rules need; roles are decoded once per distinct id tuple."""

    bos_id: int
    start_header_id: int
    end_header_id: int
    closer_ids: tuple[int, ...]
    header_newline_ids: tuple[int, ...]
    vocab_size: int
    decode: Callable[[list[int]], str]
    truncated_ids: frozenset[str] = frozenset()
    max_length: int | None = None
    _roles: dict[tuple[int, ...], int] = field(default_factory=dict)
    allow_plain: bool = False  # conversations without headers: BOS + text, anything after BOS may train
    pad_ids: frozenset[int] = frozenset()  # ids that are padding when trained (pitfalls.pad_trained)
    dates: dict[tuple, list] = field(default_factory=dict)  # system block ids -> [conversations, listed]

    def role_code(self, key: tuple[int, ...]) -> int:
        if key not in self._roles:
            try:
                self._roles[key] = KNOWN_ROLES.get(self.decode(list(key)), UNKNOWN)
            except Exception:  # an id the tokenizer cannot decode is simply not a known role
                self._roles[key] = UNKNOWN
        return self._roles[key]

    def text_raw(self, ids: Any) -> str:
        try:
            return self.decode([int(i) for i in np.atleast_1d(ids)])
        except Exception:
            return ""

    def text(self, ids: Any) -> str:
        try:
            return repr(self.decode([int(i) for i in np.atleast_1d(ids)]))
        except Exception:
            return repr([int(i) for i in np.atleast_1d(ids)])


class SliceView:
    """Index arrays of one slice of rows: rows, conversations and units as offsets; id look-ups."""

    def __init__(self, cols: dict[str, Any], first_row: int, shard: str, ctx: RuleContext,
                 sink: Violations, packed: bool) -> None:
        self.cols, self.first_row, self.shard, self.ctx, self.sink = cols, first_row, shard, ctx, sink
        self.ids, self.lens = cols["input_ids"]
        self.n_rows, self.n = len(self.lens), int(self.lens.sum())
        self.row_start = offsets(self.lens)
        self._segment(packed)

    @cached_property
    def row_of(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_rows), self.lens)

    def seg_at(self, pos: np.ndarray) -> np.ndarray:
        """The conversation of each token position (empty conversations precede their successor)."""
        return np.searchsorted(self.seg_start, pos, "right") - 1

    def row_id(self, r: int) -> str | None:
        return self.cols["id"][int(r)].as_py()

    def seg_id(self, s: int) -> str | None:
        """The conversation's own id: its packed_ids entry in a packed row, else the row id."""
        r = int(self.seg_row[s])
        k = int(s - self.seg_first_of_row[r])
        if self.pid_ok[r]:
            return self.cols["packed_ids"][0][int(self.pid_start[r]) + k].as_py()
        rid = self.row_id(r)
        return rid if self.seg_count[r] == 1 else f"{rid}#{k}"

    def emit_rows(self, rule: str, rows: np.ndarray, message: Callable[[int], str]) -> None:
        for k, r in enumerate(rows):
            if self.sink.room(rule) == 0:
                self.sink.counts[rule] += len(rows) - k
                return
            self.sink.add(rule, message(int(r)), id=self.row_id(r), shard=self.shard,
                          row=self.first_row + int(r))

    def emit_segs(self, rule: str, segs: np.ndarray, message: Callable[[int, int], str],
                  position: Callable[[int, int], int | None] = lambda k, s: None) -> None:
        """One violation per conversation ``s`` (the k-th hit); positions are flat token indices."""
        for k, s in enumerate(segs):
            if self.sink.room(rule) == 0:
                self.sink.counts[rule] += len(segs) - k
                return
            r, p = int(self.seg_row[s]), position(k, int(s))
            self.sink.add(rule, message(k, int(s)), id=self.seg_id(int(s)), shard=self.shard,
                          row=self.first_row + r, position=None if p is None else int(p - self.row_start[r]))

    def emit_positions(self, rule: str, bad: np.ndarray, message: Callable[[int, int], str]) -> None:
        """Sorted flat positions grouped per conversation: ``message(first_position, hit_count)``."""
        if bad.size:
            segs, first, counts = first_per_group(bad, self.seg_at(bad))
            self.emit_segs(rule, segs, lambda k, s: message(int(first[k]), int(counts[k])),
                           lambda k, s: int(first[k]))

    def zone(self, p: int) -> str:
        u = int(np.searchsorted(self.u_start, p, "right") - 1)
        where = ("content" if p < self.u_ce[u] else "closing token" if p == self.u_close[u]
                 else "tail after the closing token") if p >= self.u_cs[u] else "header"
        return f"{ROLE_NAMES[self.u_role[u]]} turn's {where}" if self.u_turn[u] else "preamble outside any turn"

    def _segment(self, packed: bool) -> None:
        """Conversations: the whole row, or for packed rows the runs that seq_lengths describe."""
        rows = np.arange(self.n_rows)
        self.pid_ok = np.zeros(self.n_rows, bool)
        self.pid_start = np.zeros(self.n_rows + 1, np.int64)
        self.seq_good = np.ones(self.n_rows, bool)
        if not packed:
            self.seg_row, seg_len = rows, self.lens
        else:
            sl, cnt = self.cols["seq_lengths"]
            sl = sl.astype(np.int64)
            srow = np.repeat(rows, cnt)
            sums = np.bincount(srow, weights=sl, minlength=self.n_rows).astype(np.int64)
            nonpos = np.bincount(srow, weights=sl <= 0, minlength=self.n_rows) > 0
            good = self.seq_good = (sums == self.lens) & ~nonpos & (cnt > 0)
            self.emit_rows("packing", np.flatnonzero(~good), lambda r: (
                f"seq_lengths sum to {sums[r]} for a row of {self.lens[r]} tokens"
                + (" (a length <= 0)" if nonpos[r] else "")))
            keep = good[srow]
            seg_row = np.concatenate([srow[keep], rows[~good]])
            order = np.argsort(seg_row, kind="stable")
            self.seg_row, seg_len = seg_row[order], np.concatenate([sl[keep], self.lens[~good]])[order]
            if "packed_ids" in self.cols:
                pcnt = self.cols["packed_ids"][1]
                self.pid_ok, self.pid_start = good & (pcnt == cnt), offsets(pcnt)
                self.emit_rows("packing", np.flatnonzero(good & (pcnt != cnt)),
                               lambda r: f"{pcnt[r]} packed_ids for {cnt[r]} conversations")
        self.seg_count = np.bincount(self.seg_row, minlength=self.n_rows)
        self.seg_len, self.seg_start = seg_len, offsets(seg_len)
        self.seg_first_of_row = offsets(self.seg_count)[:-1]
        self.seg_trunc = np.zeros(len(seg_len), bool)
        if self.ctx.truncated_ids:
            self.seg_trunc = self._hits(self.cols["id"])[self.seg_row]
            if self.pid_ok.any():
                flat = self._hits(self.cols["packed_ids"][0])
                k = np.arange(len(seg_len)) - self.seg_first_of_row[self.seg_row]
                use = self.pid_ok[self.seg_row]
                at = np.where(use, self.pid_start[self.seg_row] + k, 0)
                self.seg_trunc = np.where(use, flat[at], self.seg_trunc)

    def _hits(self, arr: pa.Array) -> np.ndarray:
        value_set = pa.array(sorted(self.ctx.truncated_ids), arr.type)
        hits = pc.is_in(arr, value_set=value_set)
        return (hits.fill_null(False) if hits.null_count else hits).to_numpy(zero_copy_only=False)
