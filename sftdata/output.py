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
from collections.abc import Iterable
from pathlib import Path

from sftdata.errors import OutputFolderError
from sftdata.manifest import loads_json
from sftdata.storage import Folder
from sftdata.storage.layout import LOCK_NAME, MANIFEST_NAME, PLAN_NAME, is_ours

_SHOW = 5  # foreign names listed in a refusal


def new_run_id() -> str:
    return uuid.uuid4().hex


def check_location(output: str, inputs: Iterable[Path], folders: Iterable[str] = ()) -> None:
    """Refuse output locations no run should write into (usage errors, before anything is touched)."""
    if not str(output).strip():
        raise OutputFolderError("--output is empty (an unset variable?); name the folder to write into")
    out = Folder(output)
    if out.remote:
        return
    root = out.local().expanduser().resolve()
    if root == Path(root.anchor):
        raise OutputFolderError(f"--output {output!r} is the filesystem root; name a folder of its own")
    if root == Path.home().resolve():
        raise OutputFolderError(f"--output {output!r} is the home folder; name a folder of its own")
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


def _marker(out: Folder) -> str | None:
    """Which sftdata marker the folder carries (``manifest`` or ``plan``), else None."""
    for name, kind, key in ((MANIFEST_NAME, "manifest", "format"), (PLAN_NAME, "plan", "settings")):
        if out.size(name) is None:
            continue
        try:
            data = loads_json(out.read_bytes(name))  # orjson; json for what orjson refuses
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and key in data and (kind != "manifest" or data[key] == "sftdata-shards"):
            return kind
    return None


def _foreign(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if not is_ours(n))


def _refusal(out: Folder, foreign: list[str], what: str) -> OutputFolderError:
    shown = ", ".join(foreign[:_SHOW]) + (f" and {len(foreign) - _SHOW} more" if len(foreign) > _SHOW else "")
    return OutputFolderError(f"{what}: {out} holds files sftdata did not write ({shown}); nothing was changed. "
                             "Choose an empty or new folder, or move those files away")


def prepare(out: Folder, *, resume: bool, overwrite: bool) -> None:
    """Check (and for ``overwrite`` empty) the output folder before a run writes into it."""
    if resume and overwrite:
        raise OutputFolderError("--resume and --overwrite contradict each other; pass one of them")
    if not out.remote and out.local().exists() and not out.local().is_dir():
        raise OutputFolderError(f"output {out} exists and is not a folder")
    names = {n: s for n, s in out.listing().items() if n != LOCK_NAME} if out.exists() else {}
    if names:
        marker = _marker(out)
        foreign = _foreign(names)
        if overwrite or resume:
            if marker is None:
                what = "--overwrite" if overwrite else "--resume"
                raise _refusal(out, sorted(names), f"{what} refused: {out} is not an sftdata output folder "
                               f"(no {MANIFEST_NAME} or {PLAN_NAME})") if not foreign else \
                    _refusal(out, foreign, f"{what} refused: not an sftdata output folder")
            if foreign:
                raise _refusal(out, foreign, "--overwrite refused" if overwrite else "--resume refused")
            if overwrite:
                # the markers go last, so an interrupted --overwrite can be repeated
                for name in sorted(names, key=lambda n: (n in (PLAN_NAME, MANIFEST_NAME), n == MANIFEST_NAME)):
                    out.delete(name)
        else:
            raise OutputFolderError(f"output folder {out} is not empty; pass --resume to continue a run there "
                                    "or --overwrite to replace it (nothing was changed)")
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
