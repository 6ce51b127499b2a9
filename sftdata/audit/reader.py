"""Finding and reading token data that another tool prepared: datasets folders, files, globs.

Why a reader rather than a converter: TRL, Axolotl, LLaMA-Factory, torchtune and hand-written
scripts store the same thing (``input_ids`` plus a loss mask) in different files and columns, and
the audit must judge what the trainer will see, not a copy of it. So each part (a ``datasets``
split's Arrow file, a Parquet, Arrow or JSON Lines file) is read as it is, one at a time;
`sftdata.audit.columns` then finds its columns and brings it to the audit's own layout.

Only regular files are opened: a FIFO or device in place of a data file would block ``open``
forever (issue 14).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from sftdata.errors import AuditError, UnsafeFileError
from sftdata.storage.layout import DATASET_INFO_NAME, SHARD_FILE, STATE_NAME, WORK_DIR, check_names, state_file_names
from sftdata.storage.opener import read_json

EXTENSIONS = {".arrow": "arrow", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class Part:
    """One file of the data; ``name`` is what violations show as their shard (``train/data-0.arrow``)."""

    name: str
    path: str
    kind: str  # arrow | parquet | jsonl | mds | olmo | none (a datasets folder that lists no data file)
    info: str | None = None  # the dataset_info.json that declares this part's features (datasets folders)


def _dataset_parts(folder: Path, prefix: str) -> list[Part]:
    """A ``save_to_disk`` Dataset folder: its Arrow files in ``state.json`` order (one part of kind
    ``none`` when it lists none: the audit fails it as empty, it does not skip it)."""
    try:  # the one opener and the one name check (sftdata.storage): plain names, each once
        files = state_file_names(read_json(folder / STATE_NAME), str(folder / STATE_NAME))
    except UnsafeFileError as exc:
        raise AuditError(str(exc)) from None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise AuditError(f"{folder}: unreadable datasets state.json: {exc}") from None
    info = str(folder / DATASET_INFO_NAME)
    if not files:
        return [Part(f"{prefix}{STATE_NAME}", str(folder), "none", info)]
    return [Part(f"{prefix}{f}", str(folder / f), "arrow", info) for f in files]


def discover(location: str) -> tuple[str, list[Part]]:
    """(what it is, its parts) for a datasets folder (Dataset or DatasetDict), a data file, a folder
    of data files, or a glob of them. Nothing is read but ``state.json`` / ``dataset_dict.json``."""
    if any(c in location for c in "*?["):
        hits = sorted(glob.glob(location, recursive=True))
        if not hits:
            raise AuditError(f"{location}: no file matches")
        parts: list[Part] = []
        for hit in hits:
            parts += discover(hit)[1] if Path(hit).is_dir() else [_file_part(Path(hit), Path(hit).name)]
        return "files", parts
    path = Path(location)
    if not path.exists():
        raise AuditError(f"{location}: no such folder or file")
    if not path.is_dir():
        return "file", [_file_part(path, path.name)]
    if (path / WORK_DIR).is_dir() or any(SHARD_FILE.match(p.name) for p in path.iterdir()):
        raise AuditError(f"{path}: no manifest.json beside sftdata shards: not a finished `sftdata run` output "
                         "folder (it is written last)")
    if (path / "dataset_dict.json").exists():
        try:  # split names are folder names: plain names inside this folder, each once
            splits = check_names(read_json(path / "dataset_dict.json")["splits"], str(path / "dataset_dict.json"))
        except UnsafeFileError as exc:
            raise AuditError(str(exc)) from None
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise AuditError(f"{path}: unreadable dataset_dict.json: {exc}") from None
        return "datasets DatasetDict", [p for s in splits for p in _dataset_parts(path / s, f"{s}/")]
    if (path / STATE_NAME).exists():
        return "datasets Dataset", _dataset_parts(path, "")
    from sftdata.audit.binary_formats import OLMO_TOKENS, mds_shards

    shards = mds_shards(path)
    if shards is not None:
        return "MDS", [Part(name, str(path / name), "mds") for name in shards]
    olmo = sorted(path.glob(OLMO_TOKENS))
    if olmo:
        return "OLMo-core memmaps", [Part(p.name, str(p), "olmo") for p in olmo]
    files = sorted(p for p in path.rglob("*") if p.suffix in EXTENSIONS and not p.name.startswith(".")
                   and p.name not in (DATASET_INFO_NAME, "export_manifest.json", "index.json"))
    columnar = [p for p in files if EXTENSIONS[p.suffix] != "jsonl"]
    files = columnar or files  # beside Parquet/Arrow data, JSON files are metadata (Megatron-Bridge's)
    if not files:
        raise AuditError(f"{path}: no manifest.json, and no datasets folder, Parquet, Arrow or JSON Lines "
                         "files with input_ids (not a prepared folder or token data)")
    return "files", [_file_part(p, p.relative_to(path).as_posix()) for p in files]


def _file_part(path: Path, name: str) -> Part:
    kind = EXTENSIONS.get(path.suffix)
    if kind is None:
        raise AuditError(f"{path}: not a .parquet, .arrow, .jsonl or .json file")
    return Part(name, str(path), kind)
