"""The overlap of two prepared folders' hashes in bounded memory: spilled by leading bits, matched bucket by bucket.

Why: holding both folders' hash and id columns (and a set of one of them) grew with the rows,
2.9x in peak memory from 179k to 717k records. Here each shard is read once and let go: every
conversation's hash becomes a fixed 16-byte key (a 32-digit lowercase hex hash is decoded exactly;
any other string is keyed by its BLAKE2b-128 digest) and is written with its row number (its place
in folder order) to one of ``BUCKETS`` spill files chosen by the key's low bits. The two folders'
files of one bucket are then matched with one sort; only the rows whose key occurs on both sides
are kept, written to files by row range so that their ids (and the hash strings) can be read back
shard by shard for the matches a report shows. Memory is that of a shard or a bucket, whatever
the row count. ``tests/audit/test_overlap_index.py`` compares the bucketed match with a plain set
intersection, leading-bit collisions included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BUCKETS = 64
RANGES = 64  # row-range files of a side's matched rows (at most one per shard)
RECORD = np.dtype([("k0", "<u8"), ("k1", "<u8"), ("row", "<u8")])
MATCH = np.dtype([("k0", "<u8"), ("k1", "<u8"), ("row", "<u8"), ("first", "u1")])
_NULL_KEY = hashlib.blake2b(b"\xff", digest_size=16).digest()  # no string's UTF-8 bytes are b"\xff"
_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def _hex_rows(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(16-byte keys, which rows are 32 lowercase hex digits) of (n, 32) uint8 rows."""
    nibbles = _HEX[raw]
    good = ~(nibbles == 255).any(axis=1)
    return ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).astype(np.uint8), good


def hash_keys(col: Any) -> np.ndarray:
    """One 16-byte key per hash string, as (n, 2) uint64: a string of 32 lowercase hex digits is its
    own 16 bytes (one-to-one), any other string its BLAKE2b-128 digest, a null ``_NULL_KEY``. The
    key depends on the string alone, so both folders key the same hash alike."""
    import pyarrow as pa

    n = len(col)
    keys, done = np.zeros((n, 16), np.uint8), np.zeros(n, bool)
    if n and pa.types.is_string(col.type):
        offs = np.frombuffer(col.buffers()[1], np.int32, n + 1, col.offset * 4)
        data = np.frombuffer(col.buffers()[2], np.uint8) if col.buffers()[2] is not None else np.zeros(0, np.uint8)
        valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else np.ones(n, bool)
        if col.null_count == 0 and int(offs[-1] - offs[0]) == 32 * n and bool((np.diff(offs) == 32).all()):
            keys, done = _hex_rows(data[int(offs[0]):int(offs[-1])].reshape(n, 32))
        else:
            rows = np.flatnonzero(valid & (np.diff(offs) == 32))
            if len(rows):
                keys[rows], done[rows] = _hex_rows(data[offs[rows][:, None] + np.arange(32)])
    rest = np.flatnonzero(~done)
    if len(rest):
        strings = col.take(rest).to_pylist()
        keys[rest] = np.frombuffer(b"".join(_NULL_KEY if s is None else hashlib.blake2b(s.encode(), digest_size=16)
                                            .digest() for s in strings), np.uint8).reshape(len(rest), 16)
    return np.ascontiguousarray(keys).view("<u8").reshape(n, 2)


def intersect(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The records of ``a`` and of ``b`` (``RECORD``) whose key occurs on both sides, as ``MATCH``
    sorted by key then row (``first`` marks each key's first row in ``a``), and how many keys."""
    both = np.concatenate([a, b])
    side = np.concatenate([np.zeros(len(a), np.uint8), np.ones(len(b), np.uint8)])
    order = np.lexsort((both["row"], side, both["k1"], both["k0"]))
    s, sd = both[order], side[order]
    if not len(s):
        return np.zeros(0, MATCH), np.zeros(0, MATCH), 0
    new = np.concatenate([[True], (s["k0"][1:] != s["k0"][:-1]) | (s["k1"][1:] != s["k1"][:-1])])
    group = np.cumsum(new) - 1
    has_a = np.bincount(group, weights=sd == 0) > 0
    has_b = np.bincount(group, weights=sd == 1) > 0
    shared = (has_a & has_b)[group]
    out = []
    for wanted in (0, 1):
        keep = shared & (sd == wanted)
        m = np.zeros(int(keep.sum()), MATCH)
        for name in ("k0", "k1", "row"):
            m[name] = s[name][keep]
        m["first"] = new[keep] if wanted == 0 else 0  # A's rows sort first within a key
        out.append(m)
    return out[0], out[1], int((has_a & has_b).sum())


@dataclass
class Side:
    """One folder: its shards with their first row and row count, and its spill files."""

    folder: Path
    tag: str
    work: Path
    read: Callable[[Path, str], tuple[Any, Any, Any]]  # (folder, shard) -> (hashes, ids, mapped)
    shards: list[tuple[str, int, int]] = field(default_factory=list)

    def _file(self, kind: str, k: int) -> Path:
        return self.work / f"{self.tag}-{kind}-{k:04d}.bin"

    def spill(self, names: list[str]) -> None:
        """Every conversation's (key, row) into the bucket files, shard by shard."""
        from sftdata.storage.opener import release_arrow_memory, release_pages

        files = [open(self._file("bucket", k), "wb") for k in range(BUCKETS)]  # noqa: SIM115 - closed below
        try:
            row = 0
            for name in names:
                hashes, _, mapped = self.read(self.folder, name)
                keys = hash_keys(hashes)
                del hashes
                release_pages(mapped)
                _write_grouped(files, keys[:, 0] & np.uint64(BUCKETS - 1), keys, row)
                self.shards.append((name, row, len(keys)))
                row += len(keys)
                release_arrow_memory()
        finally:
            for f in files:
                f.close()

    def bucket(self, k: int) -> np.ndarray:
        path = self._file("bucket", k)
        out = np.fromfile(path, RECORD)
        path.unlink()
        return out

    def range_starts(self) -> np.ndarray:
        per = -(-len(self.shards) // RANGES) or 1
        return np.array([self.shards[i][1] for i in range(0, len(self.shards), per)], np.uint64)

    def keep(self, matched: np.ndarray, starts: np.ndarray) -> None:
        """Append matched rows to the row-range files."""
        where = np.searchsorted(starts, matched["row"], side="right") - 1
        for r in np.unique(where).tolist():
            with open(self._file("range", r), "ab") as f:
                f.write(matched[where == r].tobytes())

    def matched(self, pick: Callable[[np.ndarray], np.ndarray]) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """(matched rows, their ids, their hashes) shard by shard in folder order, for rows ``pick`` keeps."""
        from sftdata.storage.opener import release_arrow_memory, release_pages

        starts = self.range_starts().tolist()
        bounds = [*starts, None]
        for r in range(len(starts)):
            path = self._file("range", r)
            recs = np.fromfile(path, MATCH) if path.exists() else np.zeros(0, MATCH)
            recs = np.sort(recs[pick(recs)], order="row")
            for name, first, rows in self.shards:
                if first < bounds[r] or (bounds[r + 1] is not None and first >= bounds[r + 1]):
                    continue
                lo, hi = np.searchsorted(recs["row"], [first, first + rows])
                if hi > lo:
                    hashes, ids, mapped = self.read(self.folder, name)
                    local = (recs["row"][lo:hi] - np.uint64(first)).astype(np.int64)
                    yield recs[lo:hi], ids.take(local), hashes.take(local)
                    del hashes, ids
                    release_pages(mapped)
                    release_arrow_memory()


def _write_grouped(files: list, groups: np.ndarray, keys: np.ndarray, first_row: int) -> None:
    order = np.argsort(groups, kind="stable")
    recs = np.zeros(len(keys), RECORD)
    recs["k0"], recs["k1"] = keys[order, 0], keys[order, 1]
    recs["row"] = order.astype(np.uint64) + np.uint64(first_row)
    counts = np.bincount(groups.astype(np.int64), minlength=len(files))
    at = 0
    for k, c in enumerate(counts.tolist()):
        if c:
            files[k].write(recs[at:at + c].tobytes())
            at += c


def match_sides(a: Side, b: Side) -> tuple[int, int, int]:
    """Match the two sides bucket by bucket; the matched rows go to each side's range files.
    Returns (shared keys, matched rows of a, matched rows of b)."""
    shared = a_rows = b_rows = 0
    a_starts, b_starts = a.range_starts(), b.range_starts()
    for k in range(BUCKETS):
        ma, mb, n = intersect(a.bucket(k), b.bucket(k))
        shared, a_rows, b_rows = shared + n, a_rows + len(ma), b_rows + len(mb)
        if n:
            a.keep(ma, a_starts)
            b.keep(mb, b_starts)
    return shared, a_rows, b_rows
