"""The split folders of a split run (``dataset_dict.json`` beside ``train/`` and ``eval/``), for
the commands that read one prepared folder at a time (``audit``, ``verify``, ``inspect``)."""

from __future__ import annotations

import json

from sftdata.storage import Folder, split_uri
from sftdata.storage.layout import MANIFEST_NAME

DATASET_DICT_NAME = "dataset_dict.json"


def split_folders_of(folder: str) -> list[tuple[str, str]]:
    """(split, location) of each split of a split run's folder; [] for anything else (a prepared
    folder, foreign data, or a split folder whose splits are not all finished prepared folders)."""
    top = Folder(folder)
    try:
        if top.size(MANIFEST_NAME) is not None or top.size(DATASET_DICT_NAME) is None:
            return []
        splits = json.loads(top.read_bytes(DATASET_DICT_NAME)).get("splits")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(splits, list) or not all(isinstance(s, str) and s.isidentifier() for s in splits):
        return []
    found = [(s, sub_location(top.location, s)) for s in splits]
    return found if all(Folder(loc).size(MANIFEST_NAME) is not None for _, loc in found) else []


def sub_location(location: str, name: str) -> str:
    """The folder ``name`` inside ``location`` (a URI keeps its query: ``s3://b/out/train?x=1``)."""
    head, query = split_uri(location) if "://" in location else (location.rstrip("/") or "/", "")
    return f"{head}/{name}{query}"
