"""Two token formats that are not Arrow: MosaicML MDS shards of LLM Foundry ``turns``, and OLMo-core memmaps.

Why read them here instead of through their packages: neither ``mosaicml-streaming`` nor
``ai2-olmo-core`` is in the audit's environment (and importing either would cost the start-up
time that CI pays), and both layouts are small and fixed. Each part becomes a table of
``input_ids`` and ``labels_mask`` that `sftdata.audit.columns` checks like any other.

* MDS (streaming's ``MDSWriter``, version 2, no compression): ``uint32 samples``, ``uint32
  offsets[n + 1]``, the JSON config, then per sample ``uint32 size`` and the JSON of its ``turns``
  column: ``[{"input_ids": context, "labels": response}, ...]``. Every response is taken as trained,
  which is LLM Foundry's ``target_responses: all``; its default, ``last``, trains only the last one.
* OLMo-core: ``token_ids_part_NNNN.npy`` and ``labels_mask_part_NNNN.npy`` are raw memmaps (no
  ``.npy`` header) of the ids and a bool mask aligned with them; ``token_ids_part_NNNN.csv.gz``
  holds ``start,end`` per document. Without it, documents start at every ``<|begin_of_text|>``.

Both are read in slices of about ``slices.SLICE_TOKENS`` tokens, and every malformed piece (a sample
that is not a list of turns, a string or 10^30 id, JSON nested 200,000 deep, junk in a bounds
file) is refused naming the file, the sample or line, and the problem.
"""

from __future__ import annotations

import gzip
import json
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from sftdata.audit import slices
from sftdata.audit.integrity import AuditError, MalformedDataError
from sftdata.errors import UnsafeFileError
from sftdata.storage.opener import open_regular, read_json

MDS_INDEX = "index.json"
OLMO_TOKENS = "token_ids_part_*.npy"


def mds_shards(folder: Path) -> list[str] | None:
    """The shard files an MDS ``index.json`` lists, or None when the folder is not MDS."""
    if not (folder / MDS_INDEX).exists():
        return None
    try:
        index = read_json(folder / MDS_INDEX)  # the one opener: a FIFO or /dev/zero is refused
        shards = index["shards"]
        if not all(s.get("format") == "mds" for s in shards):
            return None
    except UnsafeFileError as exc:
        raise AuditError(str(exc)) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    names = []
    for s in shards:
        raw = s.get("raw_data")
        name = raw.get("basename") if isinstance(raw, dict) else None
        if s.get("compression") or s.get("column_names") != ["turns"] or s.get("column_encodings") != ["json"]:
            raise AuditError(f"{folder}: MDS shard {name}: only uncompressed LLM Foundry shards with one json "
                             "`turns` column can be audited")
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise MalformedDataError(f"{folder / MDS_INDEX}: a shard basename that is not a plain file name: {name!r}")
        names.append(name)
    return names


_INT64 = (-(1 << 63), (1 << 63) - 1)


def _ints(values: object, where: str) -> list[int]:
    if not isinstance(values, list):
        raise MalformedDataError(f"{where} is {type(values).__name__}, not a list of ids")
    for x in values:
        if isinstance(x, bool) or not isinstance(x, int):
            raise MalformedDataError(f"{where} holds {json.dumps(x)[:40]}, not an integer id")
        if not _INT64[0] <= x <= _INT64[1]:
            raise MalformedDataError(f"{where} holds {x}, beyond a 64-bit integer")
    return values


def _sample(data: bytes, where: str) -> tuple[list[int], list[int]]:
    """One MDS sample (uint32 size, then the JSON of its turns) as ids and a 0/1 mask."""
    try:
        turns = json.loads(data[4:])
    except (ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise MalformedDataError(f"{where}: not JSON: {why}") from None
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise MalformedDataError(f"{where}: not a list of turns")
    ids: list[int] = []
    mask: list[int] = []
    for k, turn in enumerate(turns):
        context = _ints(turn.get("input_ids"), f"{where}: turn {k}: input_ids")
        response = _ints(turn.get("labels"), f"{where}: turn {k}: labels")
        ids += context + response
        mask += [0] * len(context) + [1] * len(response)
    return ids, mask


def mds_slices(path: str, where: str) -> Iterator[tuple[int, pa.Table]]:
    """(first sample, table of input_ids and labels_mask) per slice of about SLICE_TOKENS tokens."""
    size = Path(path).stat().st_size
    with open_regular(path, what=where) as f:  # the one opener: a regular file, or one line
        head = f.read(4)
        n = int(np.frombuffer(head, np.uint32, 1)[0]) if len(head) == 4 else -1
        if n < 0 or 4 + 4 * (n + 1) > size:
            raise MalformedDataError(f"{where}: not an MDS shard (its sample count {n} does not fit {size} bytes)")
        offs = np.frombuffer(f.read(4 * (n + 1)), np.uint32).astype(np.int64)
        if n and (offs[0] < 4 + 4 * (n + 1) or np.any(np.diff(offs) < 4) or offs[-1] > size):
            raise MalformedDataError(f"{where}: not an MDS shard (sample offsets outside the file or out of order)")
        ids: list[list[int]] = []
        mask: list[list[int]] = []
        first, tokens = 0, 0
        for k in range(n):
            if offs[k + 1] - offs[k] > slices.MAX_LINE_CHARS:
                raise MalformedDataError(f"{where}: sample {k}: {int(offs[k + 1] - offs[k]):,} bytes, more than a row "
                                         "of the longest the audit reads")
            f.seek(int(offs[k]))
            row_ids, row_mask = _sample(f.read(int(offs[k + 1] - offs[k])), f"{where}: sample {k}")
            slices.cuts(np.asarray([len(row_ids)]), where, k)
            ids.append(row_ids)
            mask.append(row_mask)
            tokens += len(row_ids)
            if tokens >= slices.SLICE_TOKENS or k == n - 1:
                yield first, pa.table({"input_ids": _int_lists(ids, np.int64), "labels_mask": _int_lists(mask, np.int8)})
                ids, mask, first, tokens = [], [], k + 1, 0


def _int_lists(rows: list[list[int]], dtype: type) -> pa.Array:
    lens = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    offs = np.zeros(len(rows) + 1, np.int32)
    np.cumsum(lens, out=offs[1:])
    return _lists(offs, np.fromiter((x for r in rows for x in r), dtype, int(offs[-1])))


def _olmo_starts(bounds_file: Path, n: int) -> np.ndarray:
    """Document starts from OLMo-core's ``start,end`` lines, each checked (0 <= start < end <= n)."""
    starts, end = array("q"), 0  # documents do not overlap, so there are at most n of them
    try:
        with open_regular(bounds_file) as raw, gzip.open(raw, "rt", encoding="utf-8") as f:  # regular files only
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = line.strip().split(",")
                try:
                    a, b = int(fields[0]), int(fields[1])
                except (ValueError, IndexError):
                    raise MalformedDataError(f"{bounds_file}: line {line_no}: {line.strip()[:60]!r} is not "
                                             "start,end") from None
                if not end <= a < b <= n:
                    raise MalformedDataError(f"{bounds_file}: line {line_no}: document {a},{b} is not inside the "
                                             f"{n} tokens after the previous one (which ends at {end})")
                starts.append(a)
                end = b
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise MalformedDataError(f"{bounds_file}: not a gzip of start,end lines: {exc}") from None
    return np.frombuffer(starts, np.int64) if len(starts) else np.zeros(0, np.int64)


def _bos_starts(token_file: Path, dtype: type, n: int, bos_id: int | None) -> np.ndarray:
    if bos_id is None:
        return np.zeros(0, np.int64)
    found, step = [], slices.SLICE_TOKENS
    for a in range(0, n, step):
        block = np.fromfile(token_file, dtype, min(step, n - a), offset=a * np.dtype(dtype).itemsize)
        found.append(np.flatnonzero(block == bos_id) + a)
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def olmo_slices(path: str, where: str, bos_id: int | None) -> Iterator[tuple[int, pa.Table]]:
    """(first document, table of input_ids and labels_mask) per slice of about SLICE_TOKENS tokens."""
    token_file = Path(path)
    mask_file = token_file.with_name(token_file.name.replace("token_ids_", "labels_mask_"))
    if not mask_file.is_file():
        raise AuditError(f"{token_file}: no {mask_file.name} beside it (OLMo-core's label mask)")
    n, size = mask_file.stat().st_size, token_file.stat().st_size
    width = size // max(n, 1)
    dtype = {2: np.uint16, 4: np.uint32, 8: np.uint64}.get(width)
    if dtype is None or size != width * n:
        raise AuditError(f"{token_file}: {size} bytes for {n} mask entries: not a token memmap aligned with "
                         "its label mask")
    bounds_file = token_file.with_name(token_file.name[: -len(".npy")] + ".csv.gz")
    starts = _olmo_starts(bounds_file, n) if bounds_file.is_file() else _bos_starts(token_file, dtype, n, bos_id)
    edges = np.unique(np.concatenate([[0], starts, [n]]).astype(np.int64))
    for a, b in slices.cuts(np.diff(edges), where, 0):
        lo, hi = int(edges[a]), int(edges[b])
        ids = np.fromfile(token_file, dtype, hi - lo, offset=lo * width).astype(np.int64)
        mask = np.fromfile(mask_file, np.uint8, hi - lo, offset=lo).astype(np.int16)
        offs = (edges[a:b + 1] - lo).astype(np.int32)
        yield a, pa.table({"input_ids": _lists(offs, ids), "labels_mask": _lists(offs, mask)})


def _lists(offs: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(_arrow(offs), _arrow(values))


def _arrow(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])
