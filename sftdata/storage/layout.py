"""Every name in an output folder, in one place.

Why one module: ``--resume`` trusts a folder only because the writer, the resumer, the cleaner,
the Ray retry and ``verify`` all agree on what each file is called. When each of them spelled
``shard-{index:06d}-...`` itself, that agreement was five copies kept in step by hand. Here the
writer asks for a name and everybody else asks whether a name is one of ours; the same functions
decide what ``--overwrite`` and ``--resume`` may delete (only names this layout produces).

A finished folder::

    manifest.json            written last: the commit (sftdata.manifest)
    shard-CCCCCC-PP.arrow    chunk C's P-th shard (Arrow IPC stream)
    quarantine.jsonl         every rejected record, in input order
    state.json, dataset_info.json   what `datasets.load_from_disk` reads
    audit.json               the audit report, when the run audited
    duplicates.jsonl, truncated_ids.jsonl, repeated_ids.jsonl   the lists that grow with the records
                             (sftdata.sidecars), listed and hashed in the manifest's ``files``

A run in progress adds ``_chunks/`` (the plan, one done-marker and one quarantine part per
chunk; with ``dedupe: exact``, each chunk's rendered records until its main pass) and ``.sftdata.lock``. Temporary files are ``.<final name>.tmp<pid>`` beside their target.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MANIFEST_NAME = "manifest.json"
QUARANTINE_NAME = "quarantine.jsonl"
AUDIT_NAME = "audit.json"
STATE_NAME = "state.json"
DATASET_INFO_NAME = "dataset_info.json"
LOCK_NAME = ".sftdata.lock"
WORK_DIR = "_chunks"  # done-markers and quarantine parts of a run in progress
PLAN_NAME = f"{WORK_DIR}/plan.json"
# -- the per-record lists, one JSON object a line, written before the manifest (sftdata.sidecars) --
DUPLICATES_NAME = "duplicates.jsonl"  # {"id", "duplicate_of"}: every exact duplicate, in input order
TRUNCATED_NAME = "truncated_ids.jsonl"  # {"id"}: every row cut to max_length, in input order
REPEATED_NAME = "repeated_ids.jsonl"  # {"id"}: every id used by two or more rows, sorted
SIDECAR_NAMES = (DUPLICATES_NAME, TRUNCATED_NAME, REPEATED_NAME)

SHARD_FILE = re.compile(r"^shard-(\d{6,})-(\d{2,})\.arrow$")
# a chunk's done-marker and quarantine part, and its records as ``dedupe: exact``'s first pass
# rendered them (``chunk_rendered``)
_MARKER = re.compile(rf"^{WORK_DIR}/chunk-(\d{{6,}})\.(json|quarantine\.jsonl|rendered\.arrow|rendered\.json)$")
_ROWS = re.compile(rf"^{WORK_DIR}/chunk-(\d{{6,}})\.rows\.arrow$")
_TEMP = re.compile(r"^\.(?P<name>[^/]+)\.tmp\d*$")
_TOP_LEVEL = {MANIFEST_NAME, QUARANTINE_NAME, AUDIT_NAME, STATE_NAME, DATASET_INFO_NAME, LOCK_NAME, *SIDECAR_NAMES}


def shard_name(chunk: int, part: int) -> str:
    """The one function that names shards: chunk index then part, zero-padded so names sort."""
    return f"shard-{chunk:06d}-{part:02d}.arrow"


def chunk_marker(chunk: int) -> str:
    """A chunk's done-marker; its presence (with its shards at their sizes) is what resume trusts."""
    return f"{WORK_DIR}/chunk-{chunk:06d}.json"


def chunk_quarantine(chunk: int) -> str:
    return f"{WORK_DIR}/chunk-{chunk:06d}.quarantine.jsonl"


def chunk_rows(chunk: int) -> str:
    """A mix's staged rows of a chunk: its first pass's output, read by its main pass (sftdata.mix.staged)."""
    return f"{WORK_DIR}/chunk-{chunk:06d}.rows.arrow"


def chunk_rendered(chunk: int) -> str:
    """A chunk's records as the first pass of ``dedupe: exact`` rendered them (sftdata.process.rendered)."""
    return f"{WORK_DIR}/chunk-{chunk:06d}.rendered.arrow"


def chunk_rendered_marker(chunk: int) -> str:
    """Written after ``chunk_rendered``: what the main pass checks before it trusts that file."""
    return f"{WORK_DIR}/chunk-{chunk:06d}.rendered.json"


def is_chunk_rows(name: str) -> bool:
    """True for a chunk's staged rows (or their temp file): the first pass's, kept by the main pass's cleaning."""
    return _ROWS.match(temp_target(name) or name) is not None


def temp_name(name: str, pid: int) -> str:
    """Where ``name`` is written before its atomic rename (same folder, so the rename is atomic)."""
    head, sep, base = name.rpartition("/")
    return f"{head}{sep}.{base}.tmp{pid}"


def temp_target(name: str) -> str | None:
    """The final name a temporary file stands for, or None when ``name`` is not one of our temps."""
    head, sep, base = name.rpartition("/")
    m = _TEMP.match(base)
    return f"{head}{sep}{m.group('name')}" if m else None


def shard_chunk(name: str) -> int | None:
    """The chunk index of a shard name (or of a shard's temp file), else None."""
    m = SHARD_FILE.match(temp_target(name) or name)
    return int(m.group(1)) if m else None


def is_ours(name: str) -> bool:
    """True for every name this layout produces (finished, in progress, or temporary).

    ``--overwrite`` and ``--resume`` delete nothing else: a user's notes or ``.git`` beside the
    shards are never touched.
    """
    target = temp_target(name) or name
    return (target in _TOP_LEVEL or SHARD_FILE.match(target) is not None or target == PLAN_NAME
            or _MARKER.match(target) is not None or _ROWS.match(target) is not None)


def leftovers_of(names: Iterable[str], chunks: Iterable[int]) -> list[str]:
    """Files of the given chunks (shards, markers, quarantine parts, their temps) and every temp file
    of ours: what must go before those chunks are redone."""
    redo = set(chunks)
    out = []
    for name in names:
        target = temp_target(name)
        m = _MARKER.match(target or name)
        chunk = shard_chunk(name) if m is None else int(m.group(1))
        if (chunk is not None and chunk in redo) or (target is not None and is_ours(target)):
            out.append(name)
    return out


# An export folder (``sftdata export``): what each target writes, the export manifest last. A
# DatasetDict export holds the same names under ``train/`` and ``validation/``. Staging happens in a
# folder beside OUT, ``.OUT.export-tmp`` (``export_staging``); ``.OUT.export-tmpPID`` and
# ``.OUT.export-oldPID`` are the names earlier versions left behind, recognised and cleaned too.
EXPORT_MANIFEST_NAME = "export_manifest.json"
EXPORT_SPLITS = ("train", "validation")
_EXPORT_FILE = re.compile(
    r"^(?:data-\d{5,}\.arrow|state\.json|dataset_info\.json|dataset_dict\.json|index\.json|shard\.\d{5,}\.mds"
    r"|packing_metadata\.json|token_ids_part_\d{4,}\.(?:npy|csv\.gz)|labels_mask_part_\d{4,}\.npy"
    r"|shard-\d{6,}-\d{2,}(?:\.idx)?\.parquet|export_manifest\.json|\.sftdata\.lock)$")


def is_export_name(name: str) -> bool:
    """True for every file name an export writes (finished or temporary), at the top or in a split folder.

    ``export --overwrite`` deletes nothing else: a user's files in an export folder stop it instead.
    """
    head, sep, base = name.rpartition("/")
    if sep and head not in EXPORT_SPLITS:
        return False
    return _EXPORT_FILE.match(temp_target(base) or base) is not None


def export_staging(out_name: str) -> str:
    """The staging folder an export of OUT writes into, beside OUT (one name, so a rerun finds it)."""
    return f".{out_name}.export-tmp"


def is_export_staging(entry: str, out_name: str) -> bool:
    """True for the staging folder of an export of ``out_name``, or one an earlier version left."""
    return re.fullmatch(rf"\.{re.escape(out_name)}\.export-(?:tmp|old)\d*", entry) is not None


# A training run's output folder (``sftdata train --output-dir``): the trainer names its own files;
# the copy of the data's manifest marks the folder as train's (written before the first step).
TRAIN_MARKER_NAME = "data_manifest.json"

# Names read back from a folder's own index files (a manifest's shards, a datasets ``state.json``'s
# ``_data_files``, an MDS ``index.json``) are followed only when each is a plain name inside that
# folder and none repeats: ``/etc/passwd`` or ``../x`` would read (and an export write) outside it,
# and one file listed 100,000 times is read 100,000 times. Checked before anything is opened.
_PATH_CHARS = ("/", "\\", "\0")


def name_problem(name: object, pattern: re.Pattern[str] | None = None) -> str | None:
    """Why ``name`` is not a plain file name inside its folder (matching ``pattern`` if given), else None."""
    if not isinstance(name, str) or not name:
        return "not a file name"
    if name in (".", "..") or any(c in name for c in _PATH_CHARS):
        return "a path, not a plain file inside the folder"
    if pattern is not None and not pattern.match(name):
        return f"not a file name this folder's writer produces ({pattern.pattern})"
    return None


def check_names(names: Iterable[object], where: str, pattern: re.Pattern[str] | None = None) -> list[str]:
    """``names`` as a list when every one is a plain name (see ``name_problem``) listed once; else an
    ``UnsafeFileError`` naming ``where``, the entry and the problem, before anything is read."""
    from sftdata.errors import UnsafeFileError

    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        problem = name_problem(name, pattern)
        if problem is None and name in seen:
            problem = "listed twice (its rows would be read twice)"
        if problem is not None:
            shown = repr(name)[:120]
            raise UnsafeFileError(f"{where}: entry {i} {shown} is {problem}; nothing was read")
        seen.add(name)  # type: ignore[arg-type]
        out.append(name)  # type: ignore[arg-type]
    return out


def manifest_shard_names(shards: object, where: str = MANIFEST_NAME) -> list[str]:
    """The ``file`` of every ``shards`` entry of a manifest, checked (shard names, each once)."""
    from sftdata.errors import UnsafeFileError

    if not isinstance(shards, list) or not all(isinstance(e, dict) for e in shards):
        raise UnsafeFileError(f"{where}: `shards` is not a list of entries")
    return check_names((e.get("file") for e in shards), f"{where} shards", SHARD_FILE)


def state_file_names(state: object, where: str = STATE_NAME) -> list[str]:
    """The ``_data_files`` of a ``datasets`` ``state.json`` (already parsed), checked: plain names, each once."""
    from sftdata.errors import UnsafeFileError

    entries = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UnsafeFileError(f"{where}: `_data_files` must be a list of {{\"filename\": ...}} entries")
    return check_names((e.get("filename") for e in entries), f"{where} _data_files")
