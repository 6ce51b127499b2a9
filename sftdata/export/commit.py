"""Writing an export's files: ``datasets`` folders, JSON files, and the export manifest (written last).

Why a staging folder rather than temp names inside OUT: a target writes several kinds of files
(Arrow shards, ``state.json``, Parquet, MDS ``index.json``, a DatasetDict's split folders), and
none of them may be seen half-written. Everything is written into the staging folder that
``sftdata.export.publish`` hands out and puts in place of OUT when the export is finished.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from sftdata.export.ipc_stream import StandIns, write_stream
from sftdata.stages.write.arrow import atomic_write_bytes, fsync_file
from sftdata.storage.layout import EXPORT_MANIFEST_NAME

EXPORT_MANIFEST = EXPORT_MANIFEST_NAME
EXPORT_FORMAT = "sftdata-export"
EXPORT_FORMAT_VERSION = 1


def write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _feature(t: pa.DataType) -> dict:
    if pa.types.is_list(t):
        return {"feature": _feature(t.value_type), "_type": "List"}
    return {"dtype": "string" if pa.types.is_string(t) else str(t), "_type": "Value"}


class DatasetWriter:
    """Streams tables into ``data-NNNNN.arrow`` files (Arrow IPC streams, as ``save_to_disk`` writes
    them) and ``finish()`` writes the ``state.json``/``dataset_info.json`` that ``load_from_disk`` reads."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder = folder
        self.schema = schema
        self.files: list[str] = []
        self.digest = hashlib.sha256()
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, table: pa.Table, stand_ins: StandIns | None = None) -> None:
        """One ``data-NNNNN.arrow`` file; ``stand_ins``: the table's large buffers are stand-ins whose
        bytes are streamed in (`sftdata.export.ipc_stream`), the same file without the copy."""
        name = f"data-{len(self.files):05d}.arrow"
        path = self.folder / name
        if stand_ins is not None and table.schema == self.schema:
            write_stream(path, self.schema, table, stand_ins)
        else:
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, self.schema) as writer:
                writer.write_table(table.cast(self.schema) if table.schema != self.schema else table)
        fsync_file(path)
        self.files.append(name)
        self.digest.update(name.encode())
        self.digest.update(str(table.num_rows).encode())

    def finish(self) -> None:
        if not self.files:  # an empty export still loads
            self.write(self.schema.empty_table())
        info = {"citation": "", "description": "Exported by sftdata export", "homepage": "", "license": "",
                "features": {f.name: _feature(f.type) for f in self.schema}}
        state = {"_data_files": [{"filename": f} for f in self.files],
                 "_fingerprint": self.digest.hexdigest()[:16], "_format_columns": None, "_format_kwargs": {},
                 "_format_type": None, "_output_all_columns": False, "_split": None}
        write_json(self.folder / "dataset_info.json", info)
        write_json(self.folder / "state.json", state)


def write_dataset_dict(folder: Path, splits: list[str]) -> None:
    write_json(folder / "dataset_dict.json", {"splits": splits})


def export_manifest(target: str, sources: dict[str, dict], counts: dict[str, dict], layout: dict) -> dict:
    """What the export holds and where it came from: the source manifests' sha256, target, counts."""
    from sftdata.version import __version__

    return {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "target": target,
            "created_by": {"sftdata": __version__, "pyarrow": pa.__version__},
            "sources": sources, "counts": counts, "layout": layout}
