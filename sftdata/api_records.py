"""One record through the pipeline's stages, for the Python API: an encoded row or a rejection.

Why its own module: ``sftdata.encode`` and the batched ``map_fn`` (``sftdata.api_batch``) must
give exactly what ``process.chunk.process_chunk`` writes for a record, the row or the quarantine
line's reason and message, so both go through this one function over ``RecordProcessor`` and the
same funnel (``reject_of``). Light to import (``import sftdata`` loads it): the stages are
imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sftdata.errors import RecordRejected

if TYPE_CHECKING:
    from sftdata.config import Settings
    from sftdata.process.record import RecordProcessor


@dataclass(frozen=True)
class EncodedRow:
    """One conversation as a shard row holds it (``input_ids`` and unshifted ``labels``, -100 where
    not trained), with its trained-token count and whether it was truncated."""

    id: str
    input_ids: list[int]
    labels: list[int]
    content_hash: str
    prompt_hash: str
    trained_tokens: int
    truncated: bool = False


def processor_for(settings: Settings) -> RecordProcessor:
    """The process's ``RecordProcessor`` for ``settings`` (``process.record.processor_for``),
    imported on first use so that ``import sftdata`` stays light."""
    from sftdata.process.record import processor_for as shared

    return shared(settings)


def rejected(exc: Exception, rid: str | None) -> RecordRejected:
    from sftdata.process.record import reject_of

    r = reject_of(exc)
    return RecordRejected(r.reason, r.message, id=rid, pointer=r.pointer, problems=r.problems)


def _parsed(record: Any, proc: RecordProcessor) -> Any:
    """A JSON line parsed as the run's reader parses it; a dict (or other object) as it is."""
    if not isinstance(record, (str, bytes)):
        return record
    from sftdata.stages.parse import parse_json
    from sftdata.stages.records import Reject

    raw = record.encode("utf-8", "surrogatepass") if isinstance(record, str) else record
    if len(raw) > proc.settings.max_record_bytes:
        raise Reject("record_too_large", f"line of {len(raw)} bytes is over max_record_bytes "
                     f"({proc.settings.max_record_bytes})")
    return parse_json(raw)


def _format(proc: RecordProcessor, obj: Any) -> str:
    fmt = proc.settings.input_format
    if fmt != "auto":
        return fmt
    from sftdata.stages.adapt.detect import detect_format

    return detect_format([obj], proc.settings.fields) or "messages"


def outcomes_of(proc: RecordProcessor, record: Any, source: str, line: int) -> list[EncodedRow | RecordRejected]:
    """Every conversation of one record, encoded or refused (one, except under ``tree_paths: all``);
    the same stages, funnel and reasons as ``process.chunk.process_chunk``."""
    from sftdata.process.record import RUN_FAULTS, conversation_hashes
    from sftdata.stages.parse import record_id

    rid = None
    try:
        obj = _parsed(record, proc)
        rid = record_id(obj)
        found: list[tuple[str | None, Any]] = proc.conversations(obj, source, line, _format(proc, obj))
    except RUN_FAULTS:
        raise
    except Exception as exc:  # noqa: BLE001 - the run's funnel: every failure of a record is a rejection
        found = [(rid, exc)]
    out: list[EncodedRow | RecordRejected] = []
    for rid_k, conv in found:
        shown = rid_k if rid_k is not None else f"{source}:{line}"
        if isinstance(conv, Exception):
            out.append(rejected(conv, shown))
            continue
        try:
            enc = proc.encode(conv)
            h, ph = conversation_hashes(conv)
        except RUN_FAULTS:
            raise
        except Exception as exc:  # noqa: BLE001 - as above
            out.append(rejected(exc, conv.id))
            continue
        out.append(EncodedRow(conv.id, enc.input_ids.tolist(), enc.labels.tolist(), h, ph, int(enc.trained),
                              bool(enc.truncated)))
    return out


__all__ = ["EncodedRow", "outcomes_of", "processor_for", "rejected"]
