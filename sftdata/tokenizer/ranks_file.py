"""The decoded BPE ranks on disk: plain data, checked on load, never executed.

Why: base64-decoding Meta's 128k-line ``tokenizer.model`` costs a few tenths of a second per
process, so the decoded ranks are cached. The cache used to be a pickle, and unpickling runs
code: whoever could write the cache folder ran code in every sftdata process. This format is
numbers and bytes only. A fixed header names the format, its version, the sha256 of the
``tokenizer.model`` the ranks were decoded from and the sha256 of the payload; the payload is
the ranks and end offsets as little-endian uint32 arrays followed by the token bytes. A file
that fails any check (foreign, truncated, corrupted, made from another model file) raises
``RanksFileError`` and the caller rebuilds it from the model file.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from array import array
from pathlib import Path

RANKS_FILE = "sftdata-ranks-v1.bin"
MAGIC = b"SFTRANKS"
VERSION = 1
# magic, version, token count, group count, sha256 of the source model file, sha256 of the payload
_HEADER = struct.Struct("<8sIIIxxxx32s32s")
_U32 = next(code for code in "IL" if array(code).itemsize == 4)


class RanksFileError(ValueError):
    """A ranks file is not one this version wrote for this model file."""


def _pack(values: list[int]) -> bytes:
    arr = array(_U32, values)
    if sys.byteorder == "big":  # pragma: no cover - the file is little-endian everywhere
        arr.byteswap()
    return arr.tobytes()


def _unpack(raw: memoryview) -> array:
    arr = array(_U32)
    arr.frombytes(raw)
    if sys.byteorder == "big":  # pragma: no cover
        arr.byteswap()
    return arr


def encode_ranks(ranks: dict[bytes, int], source_sha256: str) -> bytes:
    """The file's bytes for ``ranks`` (token bytes -> rank).

    Tokens are grouped by length (shortest first, each group in rank order, so the bytes are
    reproducible): a group of fixed-width tokens is cut into ``bytes`` objects by one C call.
    Payload: ``(length, count)`` per group, the ranks in that order, the token bytes.
    """
    groups: dict[int, list[tuple[bytes, int]]] = {}
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        groups.setdefault(len(token), []).append((token, rank))
    table, order = [], []
    for length in sorted(groups):
        table += [length, len(groups[length])]
        order += groups[length]
    payload = _pack(table) + _pack([rank for _, rank in order]) + b"".join(token for token, _ in order)
    header = _HEADER.pack(MAGIC, VERSION, len(order), len(groups), bytes.fromhex(source_sha256),
                          hashlib.sha256(payload).digest())
    return header + payload


def decode_ranks(data: bytes, source_sha256: str) -> dict[bytes, int]:
    """The ranks in ``data``; ``RanksFileError`` unless every check holds."""
    if len(data) < _HEADER.size:
        raise RanksFileError(f"{len(data)} bytes, shorter than the {_HEADER.size}-byte header")
    magic, version, count, n_groups, source, digest = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise RanksFileError(f"not a version-{VERSION} ranks file (magic {magic!r}, version {version})")
    if source != bytes.fromhex(source_sha256):
        raise RanksFileError(f"made from a model file with sha256 {source.hex()}, not {source_sha256}")
    payload = memoryview(data)[_HEADER.size:]
    if hashlib.sha256(payload).digest() != digest:
        raise RanksFileError("the payload does not match its sha256")
    table_end, ranks_end = 8 * n_groups, 8 * n_groups + 4 * count
    if count == 0 or n_groups == 0 or len(payload) < ranks_end:
        raise RanksFileError(f"{len(payload)} payload bytes cannot hold {count} ranks in {n_groups} groups")
    table = _unpack(payload[:table_end])
    lengths, counts = table[0::2], table[1::2]
    blob_len = sum(map(int.__mul__, lengths, counts))
    if min(lengths) < 1 or sum(counts) != count or blob_len != len(payload) - ranks_end:
        raise RanksFileError("the group table does not describe the token bytes")
    tokens: list[bytes] = []
    pos = _HEADER.size + ranks_end
    for length, n in zip(lengths, counts, strict=True):
        # one fixed-width field per token: "3s3s3s..."; a Struct of its own, not struct's cache
        tokens += struct.Struct(f"{length}s" * n).unpack_from(data, pos)
        pos += length * n
    out = dict(zip(tokens, _unpack(payload[table_end:ranks_end]).tolist(), strict=True))
    if len(out) != count or len(set(out.values())) != count:
        raise RanksFileError("a token or a rank appears twice")
    return out


def pair_max_lengths(data: bytes) -> list[int]:
    """For each two-byte prefix ``a * 256 + b``, the length of the longest token starting with it
    (0: no token of two or more bytes does). ``data`` must have passed ``decode_ranks``: the bound
    decides which ranks ``rank_subset`` looks up, so it comes from the same checked bytes."""
    import numpy as np

    _, _, count, n_groups, _, _ = _HEADER.unpack_from(data)
    table = _unpack(memoryview(data)[_HEADER.size:_HEADER.size + 8 * n_groups])
    out = np.zeros(1 << 16, dtype=np.int64)
    pos = _HEADER.size + 8 * n_groups + 4 * count
    groups = []
    for length, n in zip(table[0::2], table[1::2], strict=True):
        groups.append((length, n, pos))
        pos += length * n
    for length, n, start in sorted(groups):  # longest last: each prefix keeps its longest token
        if length >= 2:
            tokens = np.frombuffer(data, dtype=np.uint8, count=length * n, offset=start).reshape(n, length)
            out[(tokens[:, 0].astype(np.int64) << 8) | tokens[:, 1]] = length
    return out.tolist()


def read_ranks_file(path: Path, source_sha256: str) -> dict[bytes, int]:
    """The ranks stored at ``path``; ``RanksFileError`` if it is missing, unreadable or fails a check."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RanksFileError(f"cannot read {path}: {exc}") from exc
    return decode_ranks(data, source_sha256)


def write_ranks_file(path: Path, ranks: dict[bytes, int], source_sha256: str) -> bytes:
    """Write atomically (a temp file renamed over ``path``): readers see the old file or the new one.
    Returns the bytes written."""
    data = encode_ranks(ranks, source_sha256)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data
