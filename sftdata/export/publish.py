"""Putting a finished export in place of OUT: one writer, a staging folder a rerun cleans, no moment without OUT.

Why an exchange rather than two renames: the earlier commit renamed OUT aside and the staging
folder into place, so a kill between the two left no OUT at all, and the staging (``-tmpPID``) and
the old export (``-oldPID``) were named after a process no rerun knew. Now:

1. OUT is checked as ``run`` checks its folder (``sftdata.output``: not ``/``, home, the current
   folder, the source; empty, or with ``--overwrite`` an earlier export holding export names only)
   and locked with ``run``'s lock (``OUT/.sftdata.lock``), so a run and an export, or two exports,
   never write into it together. An absent OUT is created (empty) to hold the lock.
2. Leftovers of earlier exports of OUT beside it (``.OUT.export-tmp``, and ``-tmpPID``/``-oldPID``
   from earlier versions) are removed, file by export-named file; one that holds anything else, or
   whose lock a live process holds, is left alone with a line saying so.
3. The export is written into ``.OUT.export-tmp`` (its own lock taken first), the export manifest last.
4. ``renameat2(RENAME_EXCHANGE)`` swaps the staging folder and OUT in one step: OUT is the old
   export or the new one, never missing. Where the kernel or filesystem has no exchange, OUT is
   renamed to ``.OUT.export-old`` and the staging folder into place; a rerun that finds OUT missing
   puts ``-old`` back first.
5. The old export, now at the staging name, loses its export-named files and then its folders.

A kill at any step leaves OUT whole (old or new) and at most the staging folder, which the next
export of OUT removes. SIGTERM and Ctrl-C end the export like ``run`` (exit 130, staging removed).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from sftdata.errors import OutputFolderError
from sftdata.export.source import ExportError
from sftdata.faults import fault_point
from sftdata.interrupts import check_interrupted
from sftdata.output import EXPORT, RunLock, check_folder
from sftdata.storage import Folder
from sftdata.storage.atomic import fsync_dir
from sftdata.storage.layout import EXPORT_SPLITS, LOCK_NAME, export_staging, is_export_name, is_export_staging

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EXDEV}


def exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` atomically; False where this system cannot (nothing moved)."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(b))


def _old(out: Path) -> Path:
    return out.parent / f".{out.name}.export-old"


def replace_folder(new: Path, out: Path) -> None:
    """``new`` becomes ``out``; the previous ``out`` is left at ``new``'s name."""
    if exchange(new, out):
        return
    old = _old(out)  # no exchange here: two renames, undone by `recover` if cut between them
    os.replace(out, old)
    fault_point("export-between-renames")
    os.replace(new, out)
    os.replace(old, new)


def recover(out: Path) -> None:
    """Put an export back that a cut between the two fallback renames left at ``.OUT.export-old``."""
    old = _old(out)
    if not out.exists() and old.is_dir() and not old.is_symlink():
        os.replace(old, out)


def remove_export_files(folder: Path) -> list[str]:
    """Delete every export-named file in ``folder`` (and its split folders), then the empty folders;
    returns what was left (names an export does not write). Symlinks are unlinked, never followed."""
    left = []
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        rel = path.relative_to(folder).as_posix()
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.rmdir()
            if path.exists():
                left.append(rel + "/")
        elif is_export_name(rel):
            path.unlink(missing_ok=True)
        else:
            left.append(rel)
    if not left:
        with contextlib.suppress(OSError):
            folder.rmdir()
    return left


def _locked_by_someone(folder: Path) -> bool:
    import fcntl

    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def clean_stale(out: Path, warn: bool = True) -> None:
    """Remove what earlier exports of ``out`` left beside it (their staging and old folders)."""
    for entry in sorted(out.parent.iterdir()) if out.parent.is_dir() else []:
        if not is_export_staging(entry.name, out.name) or entry.is_symlink() or not entry.is_dir():
            continue
        if _locked_by_someone(entry):
            continue
        left = remove_export_files(entry)
        if left and warn:
            print(f"sftdata export: left {entry} in place: it holds files an export does not write "
                  f"({', '.join(left[:5])})", file=sys.stderr)


def _check(folder: Folder, overwrite: bool) -> None:
    """``run``'s folder rules for an export's OUT (`ExportError`, exit 2, nothing changed)."""
    if folder.remote:
        raise ExportError(f"{folder}: export writes to a local folder only")
    if folder.local().is_symlink():
        raise ExportError(f"--output {folder} is a symbolic link; name the folder itself (nothing was changed)")
    try:
        check_folder(folder, resume=False, overwrite=overwrite, kind=EXPORT)
        _check_entries(folder.local())
    except OutputFolderError as exc:
        raise ExportError(str(exc)) from None


def _check_entries(out: Path) -> None:
    """Refuse an OUT holding anything an export does not write (folders other than the splits,
    symlinks, FIFOs included): the exchange moves OUT whole, so nothing else may be in it."""
    if not out.is_dir():
        return
    foreign = []
    for base, dirs, files in os.walk(out):
        rel = Path(base).relative_to(out).as_posix()
        for name in dirs:
            path = f"{name}" if rel == "." else f"{rel}/{name}"
            if rel != "." or name not in EXPORT_SPLITS or os.path.islink(os.path.join(base, name)):
                foreign.append(path + "/")
        dirs[:] = [d for d in dirs if rel == "." and d in EXPORT_SPLITS and not os.path.islink(os.path.join(base, d))]
        for name in files:
            path = name if rel == "." else f"{rel}/{name}"
            full = os.path.join(base, name)
            if not is_export_name(path) or os.path.islink(full) or not os.path.isfile(full):
                foreign.append(path)
    if foreign:
        shown = ", ".join(sorted(foreign)[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputFolderError(f"--output refused: {out} holds files sftdata export did not write ({shown}); "
                                "nothing was changed. Choose an empty or new folder, or move those files away")


@contextlib.contextmanager
def publishing(out: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh staging folder to write the export into; when the block ends without an exception it
    replaces ``out`` (see the module's steps). Raises ``ExportError`` before anything is written for
    an OUT the export may not replace."""
    folder = Folder(out)
    recover(out)
    _check(folder, overwrite)
    created = not out.exists()
    try:
        outer = RunLock(folder).__enter__()
    except OutputFolderError as exc:
        raise ExportError(str(exc)) from None
    try:
        _check(folder, overwrite)  # again, now that the folder is ours alone
        clean_stale(out)
        tmp = out.parent / export_staging(out.name)
        if tmp.exists() or tmp.is_symlink():
            raise ExportError(f"{tmp} is in the way of the export's staging folder and is not an earlier "
                              "export's; move it away (nothing was changed)")
        tmp.mkdir()
        inner = RunLock(Folder(tmp)).__enter__()
        try:
            yield tmp
            for part in [tmp, *(p for p in tmp.iterdir() if p.is_dir())]:
                fsync_dir(part)
            fault_point("export-before-exchange")
            check_interrupted()  # a stop asked for while a C extension held the exception: do not publish
            replace_folder(tmp, out)
            outer.out, inner.out = Folder(tmp), Folder(out)  # each lock file moved with its folder
            fsync_dir(out.parent)
            fault_point("export-after-exchange")
        except BaseException:
            published = inner.out.location == str(out)
            inner.__exit__(None, None, None)
            if published:  # the staging name holds the old export now: only its export files go
                remove_export_files(tmp)
            else:  # the staging folder this export made and alone wrote into
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        outer.__exit__(None, None, None)  # the old export's lock, now at the staging name
        left = remove_export_files(tmp)
        inner.__exit__(None, None, None)
        if left:
            print(f"sftdata export: left {tmp} in place: it holds files an export does not write "
                  f"({', '.join(left[:5])})", file=sys.stderr)
    finally:
        if outer._fd is not None:
            outer.__exit__(None, None, None)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: a failed first export leaves no OUT behind
