"""``manifest.json`` and the ``datasets`` metadata that make a folder self-describing.

Like MosaicML streaming's ``index.json``: a versioned index listing every shard with its rows,
tokens and sha256, plus everything needed to know whether two folders were made the same way
(settings, schema/template/tokenizer fingerprints, library versions). No wall-clock time goes in,
so identical runs give identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections import Counter
from importlib import metadata
from pathlib import Path

import pyarrow as pa

from sftdata import __version__
from sftdata.config import Settings
from sftdata.constants import FORMAT_VERSION
from sftdata.templates import Llama3Renderer
from sftdata.tokenizer import Tokenizer
from sftdata.validate import schema_path
from sftdata.writers.arrow import BASE_SCHEMA, ShardRecord, ShardWriter, atomic_write_bytes

_LIBS = ("transformers", "tokenizers", "tiktoken", "pyarrow", "datasets", "numpy", "orjson", "jsonschema",
         "fastjsonschema")


def library_versions() -> dict[str, str]:
    out = {"sftdata": __version__, "python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _feature(t: pa.DataType) -> dict:
    if pa.types.is_list(t):
        return {"feature": _feature(t.value_type), "_type": "List"}
    return {"dtype": "string" if pa.types.is_string(t) else str(t), "_type": "Value"}


def _features(schema: pa.Schema) -> dict:
    """The `datasets` (>= 4) Features dict of our columns, written without importing `datasets`
    (a second of start-up per run)."""
    return {f.name: _feature(f.type) for f in schema}


def write_dataset_metadata(out: Path, shards: list[ShardRecord], schema: pa.Schema = BASE_SCHEMA) -> list[ShardRecord]:
    """``state.json`` + ``dataset_info.json`` so ``datasets.load_from_disk(out)`` opens the shards."""
    if not shards:  # a run where every record was rejected still gives a loadable, empty dataset
        with ShardWriter(out, 0, 1, schema) as w:
            w._open()
            shards = w.finish()
    info = {"citation": "", "description": "Llama-3 SFT rows prepared by sftdata", "features": _features(schema),
            "homepage": "", "license": ""}
    state = {
        "_data_files": [{"filename": s.file} for s in shards],
        "_fingerprint": hashlib.sha256("".join(s.sha256 for s in shards).encode()).hexdigest()[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    atomic_write_bytes(out / "dataset_info.json", json.dumps(info, indent=2, sort_keys=True).encode())
    atomic_write_bytes(out / "state.json", json.dumps(state, indent=2, sort_keys=True).encode())
    return shards


def build_manifest(settings: Settings, tokenizer: Tokenizer, plan: dict, files: list[Path],
                   shards: list[ShardRecord], counts: Counter, rejected: Counter, truncated: list[str],
                   duplicates: list[dict], schema: pa.Schema = BASE_SCHEMA,
                   repeated_ids: list[str] | None = None) -> dict:
    renderer = Llama3Renderer.for_settings(settings)
    tok = tokenizer.describe()
    tok.pop("encoder")  # ids are the same whichever encoder ran; keep the manifest identical too
    tok.update(bos_id=tokenizer.bos_id, eot_id=tokenizer.eot_id, start_header_id=tokenizer.start_header_id,
               end_header_id=tokenizer.end_header_id, eom_id=tokenizer.eom_id,
               python_tag_id=tokenizer.python_tag_id, pad_id=tokenizer.pad_id,
               header_newline_ids=tokenizer.header_newline_ids)
    totals = {"rows": sum(s.rows for s in shards), "tokens": sum(s.tokens for s in shards),
              "trained_tokens": sum(s.trained_tokens for s in shards)}
    return {
        "format": "sftdata-shards",
        "format_version": FORMAT_VERSION,
        "created_by": library_versions(),
        "pipeline": {**settings.output_settings(), "chunk_bytes": plan["chunk_bytes"],
                     "audit": {"min_trained_fraction": settings.min_trained_fraction,
                               "max_rejected_fraction": settings.max_rejected_fraction}},
        "fingerprints": {
            "schema": _sha(schema_path().read_bytes()),
            "template": renderer.fingerprint(),
            "tokenizer": tokenizer.fingerprint,
        },
        "tokenizer": tok,
        "inputs": [{"name": i["name"], "bytes": i["bytes"], "format": i["format"]} for i in plan["inputs"]],
        "chunks": plan["chunks"],
        "columns": [f.name for f in schema],
        "shards": [s.to_json() for s in shards],
        "counts": {
            "records_read": counts["records_read"],
            "records_written": counts["records_written"],
            "blank_lines": counts["blank_lines"],
            "rejected": dict(sorted(rejected.items())),
            "special_text_records": counts["special_text_records"],
            "truncated_records": len(truncated),
            "duplicate_records": len(duplicates),
            "repeated_ids": len(repeated_ids or []),
        },
        "totals": totals,
        "packing": None if settings.packing == "none" else {
            "strategy": settings.packing, "max_length": settings.max_length,
            "conversations": counts["records_written"],
            "efficiency": round(totals["tokens"] / (totals["rows"] * settings.max_length), 6) if totals["rows"] else 0.0,
        },
        "truncated_ids": truncated,
        "duplicates": duplicates,
        "repeated_ids": repeated_ids or [],
    }

