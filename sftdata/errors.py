"""One family of library errors, so the command line maps them to exit codes in one place.

Why a family: a library function fails for two kinds of reasons that a caller (a script, CI, the
CLI) must tell apart. A *usage* problem (a missing input, a bad setting, an output folder that is
not ours) is fixed by changing the call and exits 2; a *run* failure (a worker died, the disk
filled up, nothing usable was produced) exits 1 and usually keeps what was committed. Every
error class of the package subclasses ``SftdataError`` and says which kind it is with
``exit_code``; ``sftdata.cli`` turns any of them into a clean message, never a traceback.
"""

from __future__ import annotations


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


class InterruptedRun(RunError):
    """SIGINT or SIGTERM: what was committed stays, ``--resume`` continues. Exit 130."""

    exit_code = 130


class UnusableRunError(RunError):
    """The run committed its folder, but nothing in it is usable (no rows, or a fault of the tool
    rather than of the data hit many records). ``summary`` is the committed run's summary."""

    def __init__(self, message: str, summary: object = None) -> None:
        super().__init__(message)
        self.summary = summary


class TrainError(SftdataError):
    """Settings or data that cannot be trained on (or planned for); raised before any training step."""
