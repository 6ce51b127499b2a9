"""Records in, shard rows out, in batches: the ``datasets.Dataset.map`` side of the Python API.

``map_fn(...)`` returns a picklable callable for ``Dataset.map(fn, batched=True,
with_indices=True, num_proc=N)``. It returns a ``pyarrow.Table`` per batch, which ``datasets``
takes as the whole new batch: the input columns go, and the columns are the shards' own
(``sftdata.stages.write.arrow.BASE_SCHEMA``: id, input_ids and labels as int32 lists,
content_hash, prompt_hash) plus ``reason`` and ``message``. A rejected record is a row too, with
the reason code and message of its quarantine line and null ids, labels and hashes, so nothing is
dropped silently and an unfiltered row cannot be trained on by mistake; ``encode_dataset`` does
the map and splits the result into the rows and the rejected records.

Each record goes through the pipeline's own code (``process.record.RecordProcessor``), read the
way ``sftdata run`` reads a ``datasets`` folder (``stages.read.columnar.record_of``: the nulls
Arrow fills absent struct fields with are dropped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sftdata.api import Pipeline, pipeline_settings
from sftdata.api_records import EncodedRow, outcomes_of, processor_for, rejected
from sftdata.errors import RecordRejected, UsageError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from sftdata.api import Options
    from sftdata.config import Settings

EXTRA_COLUMNS = ("reason", "message")  # after the shards' columns: null on a row, set on a rejected record


class MapFn:
    """The batched encoder for ``Dataset.map``; picklable (each process builds its own tokenizer)."""

    def __init__(self, settings: Settings, source: str = "dataset") -> None:
        if settings.dedupe != "none" or settings.packing != "none":
            raise UsageError("dedupe and packing look at the whole dataset, not one batch: use sftdata.run "
                             "(or drop duplicates by content_hash after the map)")
        self.settings = settings
        self.source = source

    def __call__(self, batch: Mapping[str, list], indices: list[int] | None = None) -> Any:
        from sftdata.stages.read.columnar import record_of
        from sftdata.stages.records import Reject

        proc = processor_for(self.settings)
        names = list(batch.keys())
        n = len(batch[names[0]]) if names else 0
        ids = batch["id"] if "id" in batch else [None] * n
        rows: list[EncodedRow | RecordRejected] = []
        for i in range(n):
            if indices is None and ids[i] in (None, ""):
                raise UsageError(f"a record without an id gets {self.source}:<row>: pass with_indices=True "
                                 "to Dataset.map")
            line = indices[i] + 1 if indices is not None else 0
            try:
                obj = record_of({k: batch[k][i] for k in names})
            except Reject as exc:  # a row whose binary values are not text
                rows.append(rejected(exc, f"{self.source}:{line}"))
                continue
            rows += outcomes_of(proc, obj, self.source, line)
        return rows_table(rows)


def rows_table(rows: list[EncodedRow | RecordRejected]) -> Any:
    """The shards' columns (int32 lists) plus ``reason`` and ``message``, one row per outcome."""
    import pyarrow as pa

    from sftdata.stages.write.arrow import BASE_SCHEMA

    schema = pa.schema([*BASE_SCHEMA, *(pa.field(c, pa.string()) for c in EXTRA_COLUMNS)])
    ok = [r if isinstance(r, EncodedRow) else None for r in rows]
    bad = [r if isinstance(r, RecordRejected) else None for r in rows]
    columns = {
        "id": [r.id if r is not None else b.id for r, b in zip(ok, bad, strict=True)],
        "input_ids": [r.input_ids if r else None for r in ok],
        "labels": [r.labels if r else None for r in ok],
        "content_hash": [r.content_hash if r else None for r in ok],
        "prompt_hash": [r.prompt_hash if r else None for r in ok],
        "reason": [b.reason if b else None for b in bad],
        "message": [b.message if b else None for b in bad],
    }
    return pa.table(columns, schema=schema)


def map_fn(pipeline: Pipeline = None, *, source: str = "dataset", **options: Unpack[Options]) -> MapFn:
    """The function for ``Dataset.map(fn, batched=True, with_indices=True)`` (``num_proc`` as you
    like: the rows do not depend on it). A record without an id gets ``f"{source}:{row + 1}"``."""
    return MapFn(pipeline_settings(pipeline, **options), source)


@dataclass
class EncodedDataset:
    """``rows``: the shards' columns, one row per conversation; ``rejected``: id, reason, message."""

    rows: Any  # datasets.Dataset
    rejected: Any  # datasets.Dataset


def encode_dataset(dataset: Any, pipeline: Pipeline = None, *, num_proc: int | None = None, source: str = "dataset",
                   batch_size: int = 1000, **options: Unpack[Options]) -> EncodedDataset:
    """Encode a ``datasets.Dataset`` of records (``map_fn`` over it), split into its rows and its
    rejected records."""
    out = dataset.map(map_fn(pipeline, source=source, **options), batched=True, with_indices=True,
                      batch_size=batch_size, num_proc=num_proc, desc="sftdata encode")
    good = out.filter(_is_row, input_columns=["reason"], batched=True, num_proc=num_proc)
    bad = out.filter(_is_rejected, input_columns=["reason"], batched=True, num_proc=num_proc)
    return EncodedDataset(good.remove_columns(list(EXTRA_COLUMNS)),
                          bad.select_columns(["id", *EXTRA_COLUMNS]))


def _is_row(reasons: list[str | None]) -> list[bool]:
    return [r is None for r in reasons]


def _is_rejected(reasons: list[str | None]) -> list[bool]:
    return [r is not None for r in reasons]


__all__ = ["EncodedDataset", "MapFn", "encode_dataset", "map_fn", "rows_table"]
