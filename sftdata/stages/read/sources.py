"""Every input kind behind one interface: plan chunks, detect formats, stream raw records.

Stage ``read`` of the pipeline. Each chunk yields ``(line, object or None, original bytes,
rejection or None)``; a record that cannot even be parsed still comes out, as a rejection with a
reason, so the count of records read always equals rows written plus quarantined.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sftdata.constants import DEFAULT_MAX_DECOMPRESSED
from sftdata.errors import TooManyBlankBytes
from sftdata.stages.adapt.detect import Detection, detect
from sftdata.stages.parse import parse_json
from sftdata.stages.read.columnar import (
    columnar_error,
    is_hf_dataset_dir,
    iter_columnar,
    plan_hf_dataset,
    plan_parquet,
)
from sftdata.stages.read.compressed import DecompressedTooLarge, iter_compressed_lines, open_decompressed
from sftdata.stages.read.json_document import read_json_array
from sftdata.stages.read.jsonl import (
    Chunk,
    InputError,
    JsonTooLarge,
    RawLine,
    is_json_array,
    iter_lines,
    json_layout,
    json_value_cap,
    plan_jsonl,
    too_large_json,
)
from sftdata.stages.records import Reject
from sftdata.storage import is_uri

if TYPE_CHECKING:
    from sftdata.config import Settings

DETECT_SAMPLE = 20


def kind_of(path: Path, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED) -> str:
    """How a file is read. A ``.json`` file (compressed or not) is one JSON value unless its first
    line is a record of its own (JSON Lines under a ``.json`` name)."""
    name = path.name.lower()
    if is_hf_dataset_dir(path):
        return "hf_dataset"
    if name.endswith(".parquet"):
        return "parquet"
    for suffix, codec in ((".gz", "gz"), (".zst", "zst")):
        if name.endswith(suffix):
            if name.endswith(".json" + suffix) and _compressed_head_layout(path, f"jsonl_{codec}",
                                                                        max_decompressed_bytes) == "value":
                return f"json_{codec}"
            return f"jsonl_{codec}"
    if is_json_array(path):
        return "json_array"
    return "jsonl"


def _compressed_head_layout(path: Path, kind: str, limit: int) -> str:
    try:
        with open_decompressed(str(path), kind, limit) as f:
            head = f.read(1 << 16)
    except Exception:  # noqa: BLE001 - a corrupt stream is reported when the chunk is read
        return "lines"
    return json_layout(head)


def plan_chunks(files: list[Path], chunk_size: int, input_format: str = "messages",
                max_record_bytes: int = 64 << 20, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED,
                fields: dict[str, str] | None = None) -> list[Chunk]:
    """Chunks over all files, in order; with ``input_format='auto'`` each file's format is detected
    (after the field map). A file whose records look like no format is read as ``messages``: its
    records are then rejected with the messages rules, and ``sniff`` says what was seen."""
    chunks: list[Chunk] = []
    for path in files:
        kind = kind_of(path, max_decompressed_bytes)
        if kind == "hf_dataset":
            planned = plan_hf_dataset(path, len(chunks))
        elif kind == "parquet":
            planned = plan_parquet(path, len(chunks), path.name)
        elif kind == "jsonl":
            planned = plan_jsonl(path, len(chunks), chunk_size)
        else:
            size = path.stat().st_size
            if kind == "json_array" and size > json_value_cap(max_record_bytes):
                raise InputError(too_large_json(path.name, size, max_record_bytes))
            planned = [Chunk(len(chunks), str(path.resolve()), path.name, 0, size, 1, kind)]
        fmt = input_format
        if input_format == "auto" and planned:
            fmt = _detect(planned[0], max_record_bytes, max_decompressed_bytes, fields).format or "messages"
        chunks.extend(replace(c, format=fmt) for c in planned)
    return chunks


def _detect(chunk: Chunk, max_record_bytes: int, max_decompressed_bytes: int,
            fields: dict[str, str] | None) -> Detection:
    records = iter_records(chunk, max_record_bytes, max_decompressed_bytes)
    try:
        return detect((obj for _, obj, _, rej in islice(records, DETECT_SAMPLE) if rej is None), fields)
    finally:
        records.close()


def sniff(path: Path, settings: Settings) -> Detection | None:
    """What the first records of a local input file look like (for the summary's hints);
    None when the file cannot be read again."""
    try:
        planned = plan_chunks([path], 1 << 20, "messages", settings.max_record_bytes,
                              settings.max_decompressed_bytes)
        return _detect(planned[0], settings.max_record_bytes, settings.max_decompressed_bytes,
                       settings.fields) if planned else None
    except Exception:  # noqa: BLE001 - a hint is never worth a failure
        return None


def iter_records(chunk: Chunk, max_record_bytes: int, max_decompressed_bytes: int,
                 blank: list[int] | None = None, max_blank_bytes: int | None = None,
                 ) -> Iterator[tuple[int, Any, bytes, Reject | None]]:
    """Stage `read`: (line, parsed object or None, original bytes, rejection or None).

    Blank lines are not records: they are counted into ``blank[0]`` and skipped. Past
    ``max_blank_bytes`` bytes of them in one chunk (a compressed input is one chunk), the rest of
    the chunk is not read: one ``too_many_blank_bytes`` rejection says so.
    """
    if chunk.kind in ("parquet", "hf_dataset"):
        return _columnar_records(chunk)
    if chunk.kind in ("json_array", "json_gz", "json_zst"):  # each element gets the same parse rules as a line
        return _json_document_records(chunk, max_record_bytes, max_decompressed_bytes)
    return _line_records(chunk, max_record_bytes, max_decompressed_bytes, blank, max_blank_bytes)


def _columnar_records(chunk: Chunk) -> Iterator[tuple[int, Any, bytes, Reject | None]]:
    row = chunk.first_line
    try:
        for row, obj, raw in iter_columnar(chunk):
            yield (row, None, raw, obj) if isinstance(obj, Reject) else (row, obj, raw, None)
            row += 1
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt or truncated file: one rejection that names it
        if isinstance(exc, OSError) and is_uri(chunk.path) and not isinstance(exc, pa.ArrowException):
            raise  # a network failure of a remote input fails the run (resumable), it is not data
        yield row, None, b"", Reject("corrupt_input", columnar_error(chunk, exc))


def _json_document_records(chunk: Chunk, max_record_bytes: int, max_decompressed_bytes: int
                           ) -> Iterator[tuple[int, Any, bytes, Reject | None]]:
    try:
        elements = list(read_json_array(chunk, max_record_bytes, max_decompressed_bytes))
    except DecompressedTooLarge as exc:
        yield 1, None, b"", Reject("decompressed_too_large", f"{exc}; {chunk.name} was not read")
        return
    except JsonTooLarge as exc:  # known only once decompressed; a plain .json is refused by the plan
        yield 1, None, b"", Reject("json_too_large", str(exc))
        return
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt compressed stream (zlib.error, ZstdError, EOFError)
        yield 1, None, b"", Reject("corrupt_input", f"{chunk.name}: {type(exc).__name__}: {exc}")
        return
    for line, obj, raw in elements:
        if isinstance(obj, Reject):
            yield line, None, raw, obj
        elif obj is None:
            yield line, None, raw, Reject("invalid_json", "the file is not valid JSON: a .json file must hold one "
                                          "JSON array of records or one record (JSON Lines: name it .jsonl)")
        else:
            try:
                yield line, parse_json(raw), raw, None
            except Reject as rej:
                yield line, None, raw, rej


def _line_records(chunk: Chunk, max_record_bytes: int, max_decompressed_bytes: int, blank: list[int] | None,
                  max_blank_bytes: int | None) -> Iterator[tuple[int, Any, bytes, Reject | None]]:
    if chunk.kind in ("jsonl_gz", "jsonl_zst"):
        lines: Iterator[RawLine] = iter_compressed_lines(chunk, max_record_bytes, max_decompressed_bytes,
                                                         max_blank_bytes)
    else:
        lines = iter_lines(chunk, max_record_bytes, max_blank_bytes)
    last = chunk.first_line - 1
    try:
        for raw in lines:
            last = raw.line
            if raw.data is None:
                hint = f"; {raw.hint}" if raw.hint else ""
                yield raw.line, None, b"", Reject("record_too_large", f"line of {raw.size} bytes is over "
                                                  f"max_record_bytes {max_record_bytes}{hint}")
            elif not raw.data.strip():
                if blank is not None:
                    blank[0] += raw.lines
            else:
                try:
                    yield raw.line, parse_json(raw.data), raw.data, None
                except Reject as rej:
                    yield raw.line, None, raw.data, rej
    except DecompressedTooLarge as exc:
        yield last + 1, None, b"", Reject("decompressed_too_large", f"{exc}; the rest of {chunk.name} was not read")
    except TooManyBlankBytes as exc:
        part = f"bytes {chunk.start}-{chunk.end} of " if chunk.kind == "jsonl" else ""
        yield last + 1, None, b"", Reject("too_many_blank_bytes", f"{exc} after line {last}; the rest of "
                                          f"{part}{chunk.name} was not read")
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt compressed stream (gzip, zstd errors)
        if chunk.kind == "jsonl" or isinstance(exc, MemoryError):
            raise
        yield last + 1, None, b"", Reject("corrupt_input", f"{chunk.name}: {type(exc).__name__}: {exc}; "
                                          "the rest of the file was not read")


__all__ = ["plan_chunks", "iter_records", "kind_of", "sniff", "InputError", "open_decompressed"]
