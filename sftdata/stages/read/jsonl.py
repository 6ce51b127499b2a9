"""Read JSON Lines and JSON arrays as deterministic chunks of raw records.

Work is divided into chunks by byte ranges aligned to line ends. The plan depends only on the
input files and the chunk size, never on the number of workers, which is what makes output
byte-identical for any ``--workers`` and lets ``--resume`` skip finished chunks.

Hostile input is expected: a BOM, CRLF line ends, blank lines and lines larger than
``max_record_bytes`` (read with a bounded ``readline`` and skipped, never held whole).
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sftdata.errors import TooManyBlankBytes, UsageError
from sftdata.stages.read.remote import open_input

BOM = b"\xef\xbb\xbf"
INPUT_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".parquet")
_SCAN_BLOCK = 1 << 20


class InputError(UsageError):
    """An input path that cannot be read (missing, unreadable, matched nothing)."""


class JsonTooLarge(InputError):
    """A ``.json`` file (one JSON value, loaded whole) over ``json_value_cap``."""


def json_value_cap(max_record_bytes: int) -> int:
    """The largest ``.json`` file (one JSON value) read whole: 16 records' worth."""
    return max_record_bytes * 16


def too_large_json(name: str, size: int | None, max_record_bytes: int) -> str:
    found = f"{size:,} bytes" if size is not None else f"more than {json_value_cap(max_record_bytes):,} bytes decompressed"
    return (f"{name}: a .json file is one JSON value, loaded whole; this one is {found}, over "
            f"{json_value_cap(max_record_bytes):,} (16 x max_record_bytes): convert it to JSON Lines (one record a line)")


@dataclass(frozen=True)
class Chunk:
    index: int
    path: str  # absolute
    name: str  # as reported in ids and quarantine lines: the file name
    start: int  # byte offset
    end: int
    first_line: int  # 1-based line number of the first line in the chunk (row for columnar files)
    # jsonl | json_array (a .json file: one JSON value, an array or one record) | json_gz | json_zst |
    # jsonl_gz | jsonl_zst | parquet | hf_dataset
    kind: str = "jsonl"
    format: str = "messages"  # the record format (decided once per file, see adapters.detect)
    source: str = ""  # a mix: the name of the source the chunk belongs to ("" for a plain run)


@dataclass
class RawLine:
    line: int
    data: bytes | None  # None when over max_record_bytes
    size: int
    lines: int = 1  # a run of blank lines comes back as one RawLine covering all of them
    hint: str = ""  # why an oversized line may not be one record (CR-only line ends)


CR_HINT = ("the line holds carriage returns (\\r) but no line feed: the file has CR-only (old Mac) line ends; "
           "convert them to \\n (e.g. `tr '\\r' '\\n'`)")
_WHITESPACE = b" \t\r\n"


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files and globs to a sorted, de-duplicated list of files (folders list their *.jsonl/*.json)."""
    from sftdata.stages.read.remote import expand_remote
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


MAX_AUTO_CHUNK = 16 << 20


def auto_chunk_size(total_bytes: int) -> int:
    """About 64 chunks over the whole input, between 256 KiB and 16 MiB each. The cap is what keeps
    a worker's memory (a chunk's rows, hashes and lists) the same for any input size: above 1 GiB
    of input the chunks stop growing and their number grows instead."""
    return min(MAX_AUTO_CHUNK, max(256 << 10, total_bytes // 64))


def is_json_array(path: Path) -> bool:
    """True for a ``.json`` file that holds one JSON value (an array of records, or one record)."""
    if path.suffix != ".json":
        return False
    with open_input(path) as f:
        return json_layout(f.read(1 << 16)) == "value"


def json_layout(head: bytes) -> str:
    """``value`` (one JSON document: an array, or one pretty-printed record) or ``lines`` (JSON Lines
    in a file named ``.json``, which many exports are): judged from the first 64 KiB.

    A first line that parses on its own is JSON Lines; a document's first line (``[`` or ``{``)
    does not. A head without a line end is read as lines (one line or one record: the same). A
    first line that is a whole array is one document unless more lines follow it (JSON Lines of
    message lists, ``message_list``).
    """
    import orjson

    head = head.lstrip(BOM).lstrip(_WHITESPACE)
    nl = head.find(b"\n")
    if nl < 0:
        return "value" if head.startswith(b"[") else "lines"
    try:
        orjson.loads(head[:nl])
    except orjson.JSONDecodeError:
        return "value"
    if head.startswith(b"["):
        return "lines" if head[nl:].strip(_WHITESPACE) else "value"
    return "lines"


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


def iter_lines(chunk: Chunk, max_record_bytes: int, max_blank_bytes: int | None = None) -> Iterator[RawLine]:
    """Yield the chunk's lines, without line ends; lines over the limit come back with data=None."""
    with open_input(chunk.path) as f:
        f.seek(chunk.start)
        yield from read_lines(f, chunk.first_line, chunk.end - chunk.start, max_record_bytes, max_blank_bytes)


def read_lines(f, first_line: int, length: int | None, max_record_bytes: int,
               max_blank_bytes: int | None = None) -> Iterator[RawLine]:
    """Lines of a binary stream (``length`` bytes of it, or all), holding at most one bounded line.

    Raises ``TooManyBlankBytes`` once more than ``max_blank_bytes`` bytes of blank (whitespace-only)
    lines were read, without reading further: a compressed newline bomb costs that much, not its
    decompressed size.
    """
    pos, line, blank = 0, first_line, 0
    while length is None or pos < length:
        data = f.readline(max_record_bytes + 2)
        if not data:
            break
        begin, pos = pos, pos + len(data)
        if not data.endswith(b"\n") and len(data) > max_record_bytes:
            size = len(data)
            while True:  # skip the rest of an oversized line without keeping it
                rest = f.readline(_SCAN_BLOCK)
                pos += len(rest)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            hint = CR_HINT if b"\n" not in data and b"\r" in data[: 1 << 16] else ""
            yield RawLine(line, None, size, 1, hint)
            line += 1
            continue
        if line == 1 and data.startswith(BOM):
            data = data[3:]
        data = data.rstrip(b"\r\n")
        if not data.strip(_WHITESPACE):
            left = None if length is None else length - pos
            budget = None if max_blank_bytes is None else max_blank_bytes - blank + 1
            run, skipped = _blank_run(f, left if budget is None else budget if left is None else min(left, budget))
            pos += skipped
            blank += pos - begin
            if max_blank_bytes is not None and blank > max_blank_bytes:
                raise TooManyBlankBytes(f"more than max_blank_bytes {max_blank_bytes} bytes of blank lines")
            yield RawLine(line, b"", len(data), 1 + run)
            line += 1 + run
            continue
        yield RawLine(line, data if len(data) <= max_record_bytes else None, len(data))
        line += 1


def _blank_run(f, left: int | None) -> tuple[int, int]:
    """Consume the blank lines that follow (at most ``left`` bytes): (lines, bytes).

    Works on the stream's buffer (``peek``), so a file of a hundred million blank lines costs a
    hundred buffer scans, not a hundred million ``readline`` calls.
    """
    peek = getattr(f, "peek", None)
    lines = size = 0
    while peek is not None and (left is None or size < left):
        buf = peek(1 << 16)
        if not buf:
            break
        if left is not None:
            buf = buf[: left - size]
        ws = len(buf) - len(buf.lstrip(_WHITESPACE))
        k = buf.rfind(b"\n", 0, ws) + 1
        if k == 0:
            break
        f.read(k)
        size += k
        lines += buf.count(b"\n", 0, k)
        if ws < len(buf):
            break
    return lines, size
