"""Output-folder safety: what a run may write into, what it may delete, and one writer at a time.

Why a module of its own: ``--overwrite`` used to ``rmtree`` whatever it was given (``.``, the
home folder, the input's own folder) and ``--resume`` deleted temp-looking files in folders that
were never ours. The rule now, enforced here and nowhere else:

- sftdata deletes only files it can prove it wrote: inside a folder that carries its marker (a
  finished ``manifest.json`` or a run's ``_chunks/plan.json``), and only names that its own layout
  produces (``sftdata.storage.layout.is_ours``). Anything else is refused with what was found.
- An empty ``--output``, ``/``, the home folder, an output that holds an input or lies inside an
  input folder are usage errors, as is ``--resume`` with ``--overwrite``.
- One writer per folder: an exclusive ``flock`` on ``.sftdata.lock`` for the whole run; a second
  run fails at once naming the holder (pid, host, start time). A killed run's lock is released
  by the kernel with its process, so a stale lock file is simply taken over. Object stores have
  no locks: there the plan carries a run id that every done-marker repeats, and the commit
  refuses markers of another run (``check_markers_are_ours``).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sftdata.errors import OutputFolderError
from sftdata.manifest import loads_json
from sftdata.storage import Folder
from sftdata.storage.layout import (
    EXPORT_MANIFEST_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    PLAN_NAME,
    TRAIN_MARKER_NAME,
    is_chunk_rows,
    is_export_name,
    is_ours,
)

_SHOW = 5  # foreign names listed in a refusal


def new_run_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class OutputKind:
    """What one command's output folder looks like: the file that marks it as that command's
    (``marker``, with the JSON key and value it must hold), and which names it writes (``ours``)."""

    command: str
    option: str
    markers: tuple[tuple[str, str, str | None], ...]  # (file, key that must be there, its value or None)
    ours: Callable[[str], bool]
    replacing: str = "--overwrite"  # what a refusal of a non-empty folder names as the call that tried


def _any_name(name: str) -> bool:
    return True


RUN = OutputKind("run", "--output", ((MANIFEST_NAME, "format", "sftdata-shards"), (PLAN_NAME, "settings", None)),
                 is_ours)
EXPORT = OutputKind("export", "--output", ((EXPORT_MANIFEST_NAME, "format", "sftdata-export"),), is_export_name)
# train deletes nothing (the trainer rewrites its own files): its folder needs only train's marker
TRAIN = OutputKind("train", "--output-dir", ((TRAIN_MARKER_NAME, "format", "sftdata-shards"),), _any_name,
                   "--output-dir")


def check_location(output: str, inputs: Iterable[Path], folders: Iterable[str] = (), *,
                   option: str = "--output") -> None:
    """Refuse output locations no command should write into (usage errors, before anything is touched):
    empty, ``/``, the home folder, the current folder (or a folder holding either), a folder that
    holds an input, a folder inside an input folder. ``folders``: input folders (a run's globs'
    folders, export's source folders); ``option`` names the flag in the messages."""
    if not str(output).strip():
        raise OutputFolderError(f"{option} is empty (an unset variable?); name the folder to write into")
    out = Folder(output)
    if out.remote:
        return
    root = out.local().expanduser().resolve()
    if root == Path(root.anchor):
        raise OutputFolderError(f"{option} {output!r} is the filesystem root; name a folder of its own")
    for what, place in (("home folder", Path.home()), ("current folder", Path.cwd())):
        place = place.resolve()
        if root == place:
            raise OutputFolderError(f"{option} {output!r} is the {what}; name a folder of its own")
        if root in place.parents:
            raise OutputFolderError(f"{option} {output!r} holds the {what}; name a folder of its own")
    for path in inputs:
        if "://" in str(path):
            continue
        p = Path(path).resolve()
        if p == root or root in p.parents:
            raise OutputFolderError(f"input {path} lies inside the output folder {output}; write the output "
                                    "somewhere else")
    for folder in folders:
        p = Path(folder).resolve()
        if "://" not in str(folder) and p.is_dir() and (p in root.parents or p == root):
            raise OutputFolderError(f"the output folder {output} lies inside the input folder {folder}; its files "
                                    "would be read as input by the next run")


def _marker(out: Folder, kind: OutputKind = RUN) -> str | None:
    """Which of ``kind``'s marker files the folder carries, else None."""
    for name, key, value in kind.markers:
        if out.size(name) is None:
            continue
        try:
            data = loads_json(out.read_bytes(name))  # the one opener; orjson, json for what it refuses
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and key in data and (value is None or data[key] == value):
            return name
    return None


def _foreign(names: Iterable[str], kind: OutputKind = RUN) -> list[str]:
    return sorted(n for n in names if not kind.ours(n))


def _refusal(out: Folder, foreign: list[str], what: str) -> OutputFolderError:
    shown = ", ".join(foreign[:_SHOW]) + (f" and {len(foreign) - _SHOW} more" if len(foreign) > _SHOW else "")
    return OutputFolderError(f"{what}: {out} holds files sftdata did not write ({shown}); nothing was changed. "
                             "Choose an empty or new folder, or move those files away")


def check_folder(out: Folder, *, resume: bool, overwrite: bool, kind: OutputKind = RUN) -> list[str]:
    """Refuse an output folder this command may not write into; returns the names in it (all ours).

    Non-empty needs ``--resume`` or ``--overwrite`` (export has only the latter), and either needs the
    command's own marker and no name the command does not write."""
    if resume and overwrite:
        raise OutputFolderError("--resume and --overwrite contradict each other; pass one of them")
    if not out.remote and out.local().exists() and not out.local().is_dir():
        raise OutputFolderError(f"output {out} exists and is not a folder")
    # a mix's staged rows are written by its first pass, before this check: no earlier run's files
    names = [n for n in out.listing() if n != LOCK_NAME and not is_chunk_rows(n)] if out.exists() else []
    if not names:
        return []
    if not (overwrite or resume):
        hint = "pass --resume to continue a run there or --overwrite to replace it" if kind is RUN else \
            f"pass --overwrite to replace an earlier {kind.command}"
        raise OutputFolderError(f"output folder {out} is not empty; {hint} (nothing was changed)")
    what = kind.replacing if overwrite else "--resume"
    foreign = _foreign(names, kind)
    if _marker(out, kind) is None:
        marks = " or ".join(name for name, _, _ in kind.markers)
        raise _refusal(out, foreign or sorted(names), f"{what} refused: {out} is not an sftdata output folder "
                       f"({kind.command}: no {marks})" if not foreign else f"{what} refused: not an sftdata "
                       f"output folder ({kind.command})")
    if foreign:
        raise _refusal(out, foreign, f"{what} refused")
    return names


def prepare(out: Folder, *, resume: bool, overwrite: bool) -> None:
    """Check (and for ``overwrite`` empty) a run's output folder before the run writes into it."""
    names = check_folder(out, resume=resume, overwrite=overwrite)
    if overwrite:
        # the markers go last, so an interrupted --overwrite can be repeated
        for name in sorted(names, key=lambda n: (n in (PLAN_NAME, MANIFEST_NAME), n == MANIFEST_NAME)):
            out.delete(name)
    probe = f".write-probe{os.getpid()}"
    try:
        out.make()
        out.write_bytes(probe, b"")
        out.delete(probe)
    except OSError as exc:
        raise OutputFolderError(f"output folder {out} is not writable: {exc.strerror or exc}") from None


class RunLock:
    """An exclusive lock on a local output folder for the whole run (``with RunLock(folder):``)."""

    def __init__(self, out: Folder) -> None:
        self.out = out
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if self.out.remote:
            return self
        import fcntl

        root = self.out.local()
        root.mkdir(parents=True, exist_ok=True)
        path = root / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputFolderError(f"another sftdata run is writing into {self.out} ({holder}); wait for it "
                                        "to finish, or stop it first") from None
            try:  # the holder may have removed the file between our open and our flock: lock the current one
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        info = f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode() + b"\n", 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            (self.out.local() / LOCK_NAME).unlink(missing_ok=True)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def check_markers_are_ours(run_id: str, markers: dict[int, str], out: Folder) -> None:
    """The commit's guard against a foreign writer: every done-marker must carry this run's id."""
    strangers = sorted(i for i, rid in markers.items() if rid != run_id)
    if strangers:
        raise OutputFolderError(f"{out}: chunk(s) {', '.join(map(str, strangers[:_SHOW]))} were committed by another "
                                "run writing into the same folder at the same time; nothing was committed. Run once "
                                "more with --overwrite, and only one run per output folder")
