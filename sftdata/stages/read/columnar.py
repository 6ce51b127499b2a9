"""Parquet files and Hugging Face ``datasets`` folders (``save_to_disk``) as record streams.

Nested ``messages`` columns arrive as Arrow structs and lists; they are turned into plain Python
objects one record batch at a time, so memory is bounded by a batch, not the file. A Parquet row
group or a dataset's Arrow file is one unit of work, which keeps the plan deterministic.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa

from sftdata.errors import UnsafeFileError
from sftdata.stages.read.jsonl import Chunk, InputError
from sftdata.stages.read.remote import open_parquet
from sftdata.stages.records import Reject
from sftdata.storage.layout import state_file_names
from sftdata.storage.opener import read_regular

BATCH_ROWS = 1024


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def hf_dataset_files(path: Path) -> list[Path]:
    """The Arrow files a ``datasets`` folder lists in its ``state.json``.

    Refused with an ``InputError`` naming the folder: a ``state.json`` that is not JSON or not the
    ``datasets`` shape, and entries that are not plain file names inside the folder (``../x``,
    absolute paths, sub-folders) or that are listed twice (which would double their rows).
    """
    where = path / "state.json"
    try:  # the one opener and the one name check (sftdata.storage): plain names inside the folder, once
        raw = read_regular(where)
        try:
            state = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{where}: not a valid `datasets` state.json ({exc})") from None
        return [path / name for name in state_file_names(state, str(where))]
    except UnsafeFileError as exc:
        raise InputError(str(exc)) from None


def _unreadable(path: Path, exc: Exception) -> str:
    return f"{path.name}: {type(exc).__name__}: {str(exc).strip()[:300]}"


def plan_parquet(path: Path, start_index: int, name: str) -> list[Chunk]:
    """One chunk per row group. A file whose footer cannot be read (truncated, not Parquet) is one
    chunk all the same: reading it gives one ``corrupt_input`` rejection naming the file and the
    cause, and the other files of the run go on."""
    try:
        with open_parquet(str(path.resolve())) as f:
            meta = f.metadata
    except (MemoryError, InputError):
        raise
    except Exception:  # noqa: BLE001 - reported per file when the chunk is read
        return [Chunk(start_index, str(path.resolve()), name, 0, 1, 1, "parquet")]
    chunks, row = [], 1
    for rg in range(meta.num_row_groups):
        chunks.append(Chunk(start_index + len(chunks), str(path.resolve()), name, rg, rg + 1, row, "parquet"))
        row += meta.row_group(rg).num_rows
    return chunks


def plan_hf_dataset(path: Path, start_index: int) -> list[Chunk]:
    chunks, row = [], 1
    for f in hf_dataset_files(path):
        if not f.is_file():  # refused here, before the output folder is touched
            what = "is missing" if not f.exists() else "is not a regular file"
            raise InputError(f"{path}: its state.json lists {f.name}, which {what}: save the dataset again "
                             "(save_to_disk) or restore the file")
        try:
            rows = _arrow_rows(f)
        except (MemoryError, InputError):
            raise
        except Exception:  # noqa: BLE001 - missing or corrupt: reported per file when the chunk is read
            rows = 1
        chunks.append(Chunk(start_index + len(chunks), str(f.resolve()), f"{path.name}/{f.name}", 0, rows, row,
                            "hf_dataset"))
        row += rows
    return chunks


def _arrow_rows(path: Path) -> int:
    with pa.memory_map(str(path)) as src:
        return sum(b.num_rows for b in pa.ipc.open_stream(src))


def _clean(value, where: str = ""):
    """Arrow fills absent struct fields with nulls; drop them so they look like the JSON source.
    ``binary`` values are text stored as bytes: decoded as UTF-8 (``NotText`` when they are not)."""
    if isinstance(value, dict):
        return {k: _clean(v, f"{where}/{k}") for k, v in value.items() if v is not None or k == "content"}
    if isinstance(value, list):
        return [_clean(v, f"{where}/{i}") for i, v in enumerate(value)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotText(f"{where or '/'}: a binary value that is not UTF-8 text (byte {exc.start}); "
                          "sftdata reads text only") from None
    return value


class NotText(ValueError):
    """A binary column value that does not decode as UTF-8."""


def record_of(row: dict) -> dict:
    """One row of a ``datasets`` or Parquet table (as ``to_pylist`` gives it) as the record the
    stages read: absent struct fields (nulls) dropped, text stored as bytes decoded. Raises
    ``Reject("invalid_utf8")`` for bytes that are not UTF-8 text."""
    try:
        return _clean(row)
    except NotText as exc:
        raise Reject("invalid_utf8", str(exc)) from None


def _shown(value):
    """A binary value as it goes into the quarantine's ``original``: its bytes, escaped."""
    return bytes(value).decode("utf-8", "backslashreplace")


def columnar_error(chunk: Chunk, exc: Exception) -> str:
    """The quarantine message for a Parquet or Arrow file that cannot be read."""
    return f"{_unreadable(Path(chunk.name), exc)}; the rest of this {chunk.kind} chunk was not read"


def iter_columnar(chunk: Chunk) -> Iterator[tuple[int, object, bytes]]:
    """(row number, record object, original as JSON bytes) for each row of the chunk; the object is
    a ``Reject`` for a row whose binary values are not UTF-8 text."""
    row = chunk.first_line
    with contextlib.ExitStack() as stack:
        if chunk.kind == "parquet":
            f = stack.enter_context(open_parquet(chunk.path))
            batches = f.iter_batches(batch_size=BATCH_ROWS, row_groups=[chunk.start])
        else:
            batches = pa.ipc.open_stream(stack.enter_context(pa.memory_map(chunk.path)))
        for batch in batches:
            for rec in batch.to_pylist():
                try:
                    obj = _clean(rec)
                except NotText as exc:
                    yield row, Reject("invalid_utf8", str(exc)), orjson.dumps(rec, option=orjson.OPT_NON_STR_KEYS,
                                                                              default=_shown)
                else:
                    yield row, obj, orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS, default=str)
                row += 1
