"""One family of library errors, so the command line maps them to exit codes in one place.

Why a family: a library function fails for two kinds of reasons that a caller (a script, CI, the
CLI) must tell apart. A *usage* problem (a missing input, a bad setting, an output folder that is
not ours) is fixed by changing the call and exits 2; a *run* failure (a worker died, the disk
filled up, nothing usable was produced) exits 1 and usually keeps what was committed. Every
error class of the package subclasses ``SftdataError`` and says which kind it is with
``exit_code``; ``sftdata.cli`` turns any of them into a clean message, never a traceback.
"""

from __future__ import annotations

import errno


class SftdataError(Exception):
    """Base of every error sftdata raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(SftdataError):
    """The call itself is wrong (arguments, inputs, output location): fix the call. Exit 2."""

    exit_code = 2


class RunError(SftdataError):
    """A run that cannot start or finish (unusable output folder, a dead worker, a full disk)."""


class OutputFolderError(UsageError):
    """An output location sftdata refuses to write into or delete from (not ours, unsafe, locked)."""


class UnsafeFileError(UsageError, OSError):
    """A file sftdata refuses to open (a FIFO, a device, oversized metadata) or a name it refuses to
    follow (a manifest or ``state.json`` entry that is a path, not a plain name, or is listed twice).
    Also an ``OSError``, so every reader that already turns I/O errors into one line handles it."""


class ManifestError(UsageError):
    """A folder whose ``manifest.json`` is missing, unreadable, or of another format version."""


class AuditError(UsageError):
    """A folder the audit cannot check at all (not a folder, no or unreadable manifest). Exit 2."""


class MalformedInputError(UsageError):
    """An input that cannot be read as what it claims to be (a wrong type, a row that does not
    line up, a file cut short): the message names the file, the row and the problem. Exit 2."""


class InterruptedRun(RunError):
    """SIGINT or SIGTERM: what was committed stays, ``--resume`` continues. Exit 130."""

    exit_code = 130


class UnusableRunError(RunError):
    """The run committed its folder, but nothing in it is usable (no rows, or a fault of the tool
    rather than of the data hit many records). ``summary`` is the committed run's summary."""

    def __init__(self, message: str, summary: object = None) -> None:
        super().__init__(message)
        self.summary = summary


class ExportError(UsageError):
    """An export that cannot be made as asked (bad input, failed audit, rows the target cannot hold)."""


class DecompressedTooLarge(UsageError):
    """A compressed input that decompresses past its limit (``max_decompressed_bytes``)."""


class TooManyBlankBytes(UsageError):
    """An input with more blank (whitespace-only) lines than ``max_blank_bytes``: a newline bomb."""


# OS errors: the environment failed the work (exit 1), or the call named a path sftdata cannot use (exit 2)
WORK_FAILED = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EIO: "I/O error",
               errno.ENOMEM: "out of memory"}


def os_error_status(exc: OSError) -> tuple[int, str]:
    """The one ``OSError`` policy of every command: ``(exit code, one line)``.

    A full disk, an exceeded quota, a device I/O error or no memory fail the work (1: the call was
    right, rerun it once the machine is fixed; ``run --resume`` keeps what was committed). Every
    other OS error (no such file, permission denied, not a folder, a read-only filesystem, an
    unreachable remote store) concerns a path the call named: 2.
    """
    names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
    what = WORK_FAILED.get(exc.errno or -1) or exc.strerror or str(exc) or type(exc).__name__
    line = f"{what}: {names}" if names else what
    return (1 if exc.errno in WORK_FAILED else 2), " ".join(line.split())


def exit_status(exc: BaseException) -> tuple[int, str] | None:
    """``(exit code, message)`` for an error a command may meet, ``None`` for a bug (a traceback)."""
    if isinstance(exc, SftdataError):
        return exc.exit_code, str(exc)
    if isinstance(exc, OSError):
        return os_error_status(exc)
    if isinstance(exc, KeyboardInterrupt):
        return InterruptedRun.exit_code, "interrupted"
    if isinstance(exc, MemoryError):
        return 1, "out of memory"
    return None


class TrainError(SftdataError):
    """Settings or data that cannot be trained on (or planned for); raised before any training step."""


class TrainRefused(TrainError):
    """``train`` or ``plan`` refused before anything is read or written: an ``--output-dir`` it may
    not write into, a folder that is not prepared data, a file sftdata will not open. Exit 2."""

    exit_code = 2


class RecordRejected(UsageError):
    """``sftdata.encode`` refused a record: ``reason`` and ``message`` are those of the quarantine
    line ``sftdata run`` would write for it (``pointer`` where in the record, ``problems`` every
    problem found when there are several). Exit 2, as an input refused."""

    def __init__(self, reason: str, message: str, *, id: str | None = None, pointer: str = "",
                 problems: list[dict] | None = None) -> None:
        super().__init__(f"{id + ': ' if id else ''}[{reason}] {message}")
        self.reason = reason
        self.message = message
        self.id = id
        self.pointer = pointer
        self.problems = problems or []


class FolderNotVerified(SftdataError):
    """``sftdata.load`` found a prepared folder whose shards do not match its manifest (what
    ``sftdata verify`` exits 1 for); ``report`` is the ``IntegrityReport``."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report
