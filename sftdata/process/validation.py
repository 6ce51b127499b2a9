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
from sftdata.readers.jsonl import expand_inputs
from sftdata.readers.sources import plan_chunks
from sftdata.records import Rejection
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
        rej = self.rejection
        if rej is None:
            return f"{self.path}:{self.line}: ok"
        rid = f" id={rej.id}" if rej.id else ""
        return f"{self.path}:{self.line}{rid}: [{rej.reason}] {rej.message}"


def validate_files(paths: list[str], settings: Settings) -> Iterator[Checked]:
    """Every record of ``paths`` (files, folders, globs, URIs) with its verdict, in input order."""
    for chunk in plan_chunks(expand_inputs(paths), VALIDATE_CHUNK_BYTES, settings.input_format):
        where = display(chunk.path)
        for line, rej in validate_chunk(chunk, settings):
            yield Checked(where, line, rej)
