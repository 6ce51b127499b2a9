"""A prepared folder as planning and training read it: the manifest, checked, and the shards, memory-mapped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sftdata.errors import TrainError, TrainRefused


def read_manifest(data_dir: Path) -> dict:
    """The folder's manifest (through ``sftdata.manifest.read_manifest``: format and version
    checked); refuses folders that are not a finished ``sftdata run`` output."""
    from sftdata.errors import ManifestError
    from sftdata.manifest import read_manifest as read

    try:
        return read(str(data_dir)).to_json()
    except ManifestError as exc:
        raise TrainRefused(f"{data_dir} is not a prepared sftdata output: {exc} (`sftdata run` writes the manifest "
                         "last, so a folder without it is unfinished or was not written by sftdata)") from None


def check_dataset_files(data_dir: Path) -> list[str]:
    """What ``load_from_disk`` will open, checked first through the one opener and the one name check:
    ``state.json`` and ``dataset_info.json`` regular files within the metadata limit, every listed
    file a plain name, listed once, and a regular file (a FIFO shard hung ``plan`` before)."""
    from sftdata.storage.layout import DATASET_INFO_NAME, STATE_NAME, state_file_names
    from sftdata.storage.opener import read_json, regular_size

    try:
        read_json(data_dir / DATASET_INFO_NAME)
        names = state_file_names(read_json(data_dir / STATE_NAME), str(data_dir / STATE_NAME))
        for name in names:
            regular_size(data_dir / name, what=f"{data_dir}/{name}")
    except OSError as exc:  # UnsafeFileError included
        raise TrainRefused(f"cannot load the shards in {data_dir}: {exc.strerror or exc}"
                         + (f": {exc.filename}" if exc.filename else "")) from None
    return names


def load_shards(data_dir: Path) -> Any:
    """The shards as a memory-mapped ``datasets.Dataset`` (nothing is read into memory)."""
    from datasets import Dataset, load_from_disk

    check_dataset_files(data_dir)
    try:
        ds = load_from_disk(str(data_dir))
    except Exception as exc:  # datasets raises several types for a malformed folder
        raise TrainError(f"cannot load the shards in {data_dir}: {exc}") from exc
    missing = [c for c in ("input_ids", "labels") if c not in getattr(ds, "column_names", ())]
    if not isinstance(ds, Dataset) or missing or len(ds) == 0:
        raise TrainError(f"{data_dir} does not hold one non-empty Dataset with input_ids and labels")
    return ds
