"""``sftdata validate`` as a library call: every record of the inputs through read, parse, adapt
and validate (the tokenizer is never loaded), one outcome per record.

Why a library function: CI scripts and notebooks want the same verdicts the CLI prints, without
parsing its output; the CLI only formats what this yields.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sftdata.config import Settings
from sftdata.process.chunk import validate_chunk
from sftdata.stages.read.jsonl import expand_inputs
from sftdata.stages.read.sources import plan_chunks
from sftdata.stages.records import Rejection
from sftdata.storage import display

VALIDATE_CHUNK_BYTES = 64 << 20  # validation keeps no per-chunk state, so chunks can be large


@dataclass(frozen=True)
class Checked:
    """One record's verdict: ``rejection`` is None for a valid record."""

    path: str  # as reports may show it
    line: int
    rejection: Rejection | None

    @property
    def ok(self) -> bool:
        return self.rejection is None

    def describe(self) -> str:
        """One line per problem of the record: the first as its reason, the others as ``also``."""
        rej = self.rejection
        if rej is None:
            return f"{self.path}:{self.line}: ok"
        rid = f" id={rej.id}" if rej.id else ""
        where = f"{self.path}:{self.line}{rid}"
        lines = [f"{where}: [{rej.reason}] {rej.message}"]
        lines += [f"{where}:   also [{p['reason']}] {p['message']}" for p in rej.problems[1:]]
        return "\n".join(lines)


def validate_files(paths: list[str], settings: Settings, formats: dict[str, str] | None = None) -> Iterator[Checked]:
    """Every record of ``paths`` (files, folders, globs, URIs) with its verdict, in input order,
    read exactly as ``sftdata run`` reads them (format detection, field map, limits). ``formats``,
    when given, receives the format each file was read as."""
    chunks = plan_chunks(expand_inputs(paths), VALIDATE_CHUNK_BYTES, settings.input_format, settings.max_record_bytes,
                         settings.max_decompressed_bytes, settings.fields)
    for chunk in chunks:
        if formats is not None:
            formats[str(chunk.path)] = chunk.format
        where = display(chunk.path)
        for line, rej in validate_chunk(chunk, settings):
            yield Checked(where, line, rej)
