"""Read JSON Lines and JSON arrays as deterministic chunks of raw records.

Work is divided into chunks by byte ranges aligned to line ends. The plan depends only on the
input files and the chunk size, never on the number of workers, which is what makes output
byte-identical for any ``--workers`` and lets ``--resume`` skip finished chunks.

Hostile input is expected: a BOM, CRLF line ends, blank lines and lines larger than
``max_record_bytes`` (read with a bounded ``readline`` and skipped, never held whole).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sftdata.errors import UsageError
from sftdata.readers.remote import input_size, open_input

BOM = b"\xef\xbb\xbf"
INPUT_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".parquet")
_SCAN_BLOCK = 1 << 20


class InputError(UsageError):
    """An input path that cannot be read (missing, unreadable, matched nothing)."""


@dataclass(frozen=True)
class Chunk:
    index: int
    path: str  # absolute
    name: str  # as reported in ids and quarantine lines: the file name
    start: int  # byte offset
    end: int
    first_line: int  # 1-based line number of the first line in the chunk (row for columnar files)
    kind: str = "jsonl"  # jsonl | json_array | jsonl_gz | jsonl_zst | parquet | hf_dataset
    format: str = "messages"  # the record format (decided once per file, see adapters.detect)


@dataclass
class RawLine:
    line: int
    data: bytes | None  # None when over max_record_bytes
    size: int


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files and globs to a sorted, de-duplicated list of files (folders list their *.jsonl/*.json)."""
    from sftdata.readers.remote import expand_remote
    from sftdata.storage import is_uri

    out: list[Path] = []
    for pattern in patterns:
        if is_uri(pattern):  # any filesystem pyarrow opens: s3://, gs://, hdfs://, file://
            try:
                out.extend(expand_remote(pattern, INPUT_SUFFIXES))  # type: ignore[arg-type]
            except (FileNotFoundError, OSError) as exc:
                raise InputError(str(exc)) from None
            continue
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise InputError(f"input {pattern!r} matched no file")
        for m in matches:
            p = Path(m)
            if p.is_dir() and (p / "state.json").is_file() and (p / "dataset_info.json").is_file():
                out.append(p)  # a `datasets` folder saved with save_to_disk
            elif p.is_dir():
                files = sorted(q for q in p.rglob("*") if q.is_file() and q.name.endswith(INPUT_SUFFIXES))
                if not files:
                    raise InputError(f"input folder {p} holds no {', '.join(INPUT_SUFFIXES)} file")
                out.extend(files)
            elif p.is_file():
                out.append(p)
            else:
                raise InputError(f"input file {p} does not exist")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def auto_chunk_size(total_bytes: int) -> int:
    """About 64 chunks over the whole input, between 256 KiB and 64 MiB each."""
    return min(64 << 20, max(256 << 10, total_bytes // 64))


def is_json_array(path: Path) -> bool:
    if path.suffix != ".json":
        return False
    with open_input(path) as f:
        head = f.read(4096).lstrip(BOM).lstrip()
    return head.startswith(b"[")


def plan_jsonl(path: Path, start_index: int, chunk_size: int) -> list[Chunk]:
    """Split a JSON Lines file into chunks of about ``chunk_size`` bytes, each ending at a line end."""
    size = path.stat().st_size
    chunks: list[Chunk] = []
    with open_input(path) as f:
        start, line = 0, 1
        while start < size:
            target = min(size, start + chunk_size)
            f.seek(start)
            lines_in = f.read(target - start).count(b"\n")
            end = target
            if target < size:  # extend to the next line end
                f.seek(target)
                while True:
                    block = f.read(_SCAN_BLOCK)
                    if not block:
                        end = size
                        break
                    nl = block.find(b"\n")
                    if nl >= 0:
                        end += nl + 1
                        lines_in += 1
                        break
                    end += len(block)
            chunks.append(Chunk(start_index + len(chunks), str(path.resolve()), path.name, start, end, line))
            start, line = end, line + lines_in
    return chunks


def iter_lines(chunk: Chunk, max_record_bytes: int) -> Iterator[RawLine]:
    """Yield the chunk's lines, without line ends; lines over the limit come back with data=None."""
    with open_input(chunk.path) as f:
        f.seek(chunk.start)
        yield from read_lines(f, chunk.first_line, chunk.end - chunk.start, max_record_bytes)


def read_lines(f, first_line: int, length: int | None, max_record_bytes: int) -> Iterator[RawLine]:
    """Lines of a binary stream (``length`` bytes of it, or all), holding at most one bounded line."""
    pos, line = 0, first_line
    while length is None or pos < length:
        data = f.readline(max_record_bytes + 2)
        if not data:
            break
        pos += len(data)
        if not data.endswith(b"\n") and len(data) > max_record_bytes:
            size = len(data)
            while True:  # skip the rest of an oversized line without keeping it
                rest = f.readline(_SCAN_BLOCK)
                pos += len(rest)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield RawLine(line, None, size)
            line += 1
            continue
        if line == 1 and data.startswith(BOM):
            data = data[3:]
        data = data.rstrip(b"\r\n")
        yield RawLine(line, data if len(data) <= max_record_bytes else None, len(data))
        line += 1


def read_json_array(chunk: Chunk, max_record_bytes: int) -> Iterator[tuple[int, object | None, bytes]]:
    """Elements of a JSON array file: (1-based element index, value or None if unparsable, raw)."""
    import orjson

    size = input_size(chunk.path)
    if size > max_record_bytes * 16:
        raise InputError(f"{chunk.name}: a JSON array file of {size} bytes is too large to load; use JSON Lines")
    with open_input(chunk.path) as f:
        raw = f.read().lstrip(BOM)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # the stdlib accepts what orjson refuses (lone surrogates, huge integers): judge per element
            doc = json.loads(raw.decode("utf-8", errors="strict"))
        except (ValueError, RecursionError):
            yield 1, None, raw
            return
    if not isinstance(doc, list):
        yield 1, None, raw
        return
    for i, item in enumerate(doc, start=1):
        # ASCII escapes survive lone surrogates; the element is then parsed like a line
        yield i, item, json.dumps(item, ensure_ascii=True).encode()
