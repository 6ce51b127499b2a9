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
from typing import Any

from sftdata.adapters.detect import detect_format
from sftdata.readers.columnar import is_hf_dataset_dir, iter_columnar, plan_hf_dataset, plan_parquet
from sftdata.readers.compressed import DecompressedTooLarge, iter_compressed_lines, open_decompressed
from sftdata.readers.jsonl import (
    Chunk,
    InputError,
    RawLine,
    is_json_array,
    iter_lines,
    plan_jsonl,
    read_json_array,
)
from sftdata.records import Reject
from sftdata.validate import parse_json

DETECT_SAMPLE = 20


def kind_of(path: Path) -> str:
    name = path.name.lower()
    if is_hf_dataset_dir(path):
        return "hf_dataset"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".gz"):
        return "jsonl_gz"
    if name.endswith(".zst"):
        return "jsonl_zst"
    if is_json_array(path):
        return "json_array"
    return "jsonl"


def plan_chunks(files: list[Path], chunk_size: int, input_format: str = "messages",
                max_record_bytes: int = 64 << 20, max_decompressed_bytes: int = 64 << 30) -> list[Chunk]:
    """Chunks over all files, in order; with ``input_format='auto'`` each file's format is detected."""
    chunks: list[Chunk] = []
    for path in files:
        kind = kind_of(path)
        if kind == "hf_dataset":
            planned = plan_hf_dataset(path, len(chunks))
        elif kind == "parquet":
            planned = plan_parquet(path, len(chunks), path.name)
        elif kind == "jsonl":
            planned = plan_jsonl(path, len(chunks), chunk_size)
        else:
            size = path.stat().st_size
            planned = [Chunk(len(chunks), str(path.resolve()), path.name, 0, size, 1, kind)]
        fmt = input_format
        if input_format == "auto" and planned:
            sample = [obj for _, obj, _, rej in islice(iter_records(planned[0], max_record_bytes,
                                                                    max_decompressed_bytes), DETECT_SAMPLE)
                      if rej is None]
            fmt = detect_format(sample) or "messages"
        chunks.extend(replace(c, format=fmt) for c in planned)
    return chunks


def iter_records(chunk: Chunk, max_record_bytes: int, max_decompressed_bytes: int,
                 blank: list[int] | None = None) -> Iterator[tuple[int, Any, bytes, Reject | None]]:
    """Stage `read`: (line, parsed object or None, original bytes, rejection or None).

    Blank lines are not records: they are counted into ``blank[0]`` and skipped.
    """
    if chunk.kind in ("parquet", "hf_dataset"):
        for row, obj, raw in iter_columnar(chunk):
            yield row, obj, raw, None
        return
    if chunk.kind == "json_array":  # each element gets the same parse rules as a line
        for line, obj, raw in read_json_array(chunk, max_record_bytes):
            if obj is None:
                yield line, None, raw, Reject("invalid_json", "the file is not a valid JSON array of records")
                continue
            try:
                yield line, parse_json(raw), raw, None
            except Reject as rej:
                yield line, None, raw, rej
        return
    if chunk.kind in ("jsonl_gz", "jsonl_zst"):
        lines: Iterator[RawLine] = iter_compressed_lines(chunk, max_record_bytes, max_decompressed_bytes)
    else:
        lines = iter_lines(chunk, max_record_bytes)
    last = chunk.first_line - 1
    try:
        for raw in lines:
            last = raw.line
            if raw.data is None:
                yield raw.line, None, b"", Reject("record_too_large", f"line of {raw.size} bytes is over "
                                                  f"max_record_bytes {max_record_bytes}")
                continue
            if not raw.data.strip():
                if blank is not None:
                    blank[0] += 1
                continue
            try:
                yield raw.line, parse_json(raw.data), raw.data, None
            except Reject as rej:
                yield raw.line, None, raw.data, rej
    except DecompressedTooLarge as exc:
        yield last + 1, None, b"", Reject("decompressed_too_large", f"{exc}; the rest of {chunk.name} was not read")
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt compressed stream (gzip, zstd errors)
        if chunk.kind == "jsonl" or isinstance(exc, MemoryError):
            raise
        yield last + 1, None, b"", Reject("corrupt_input", f"{chunk.name}: {type(exc).__name__}: {exc}; "
                                          "the rest of the file was not read")


__all__ = ["plan_chunks", "iter_records", "kind_of", "InputError", "open_decompressed"]
