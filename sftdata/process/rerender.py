"""Re-render source records with the settings a prepared folder recorded (`sftdata audit --source`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from sftdata.config import Settings
from sftdata.process.record import RecordProcessor, conversation_hashes
from sftdata.stages.read.jsonl import expand_inputs
from sftdata.stages.read.sources import iter_records, plan_chunks
from sftdata.stages.records import Reject


def settings_from_manifest(manifest: dict) -> Settings:
    names = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in manifest["pipeline"].items() if k in names})


def render_source_rows(paths: list[str], manifest: dict) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(id, input_ids, labels) of every record the folder's settings would write, in input order."""
    settings = settings_from_manifest(manifest)
    proc = RecordProcessor(settings)
    seen: set[str] = set()
    chunk_bytes = manifest["pipeline"].get("chunk_bytes", 64 << 20)
    for chunk in plan_chunks(expand_inputs(paths), chunk_bytes, settings.input_format, settings.max_record_bytes,
                             settings.max_decompressed_bytes, settings.fields):
        for line, obj, _raw, rej in iter_records(chunk, settings.max_record_bytes, settings.max_decompressed_bytes):
            if rej is not None:
                continue
            try:
                conv = proc.conversation(obj, chunk.name, line, chunk.format)
                if settings.dedupe == "exact":
                    h = conversation_hashes(conv)[0]
                    if h in seen:
                        continue
                    seen.add(h)
                enc = proc.encode(conv)
            except Reject:
                continue
            yield conv.id, enc.input_ids, enc.labels
