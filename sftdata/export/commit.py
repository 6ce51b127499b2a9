"""Writing an export atomically: a staging folder beside OUT, the export manifest last, one rename.

Why a staging folder rather than temp names inside OUT: a target writes several kinds of files
(Arrow shards, ``state.json``, Parquet, MDS ``index.json``, a DatasetDict's split folders), and
none of them may be seen half-written. Everything goes to ``.OUT.export-tmpPID`` and the folder is
renamed into place at the end, so OUT either holds a finished export (its ``export_manifest.json``
written last) or is left as it was; a failed export removes its staging folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from sftdata.export.source import ExportError
from sftdata.stages.write.arrow import atomic_write_bytes, fsync_dir, fsync_file

EXPORT_MANIFEST = "export_manifest.json"
EXPORT_FORMAT = "sftdata-export"
EXPORT_FORMAT_VERSION = 1


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty OUT (unless ``overwrite``) before any work is done."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} is not empty; choose an empty folder or pass --overwrite (nothing was changed)")


@contextmanager
def staging(out: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh folder to write into; renamed to ``out`` when the block ends without an exception."""
    check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.export-old{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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

    def write(self, table: pa.Table) -> None:
        name = f"data-{len(self.files):05d}.arrow"
        path = self.folder / name
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
    from sftdata import __version__

    return {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "target": target,
            "created_by": {"sftdata": __version__, "pyarrow": pa.__version__},
            "sources": sources, "counts": counts, "layout": layout}
