"""The files an audit writes for CI (``--json``, ``--junit``, ``--html``, ``verify --json``), written
atomically, and never a stale passing one left behind.

Why: CI publishes these files. A report written in place and cut by a full disk is a broken
artifact; worse, an audit that crashed or was refused used to leave the *previous* run's passing
``junit.xml`` at the path, and a job that publishes it showed green. So each file is written under
a temporary name, fsynced and renamed (`sftdata.storage.atomic`), and when an audit ends without
writing its reports (refused, interrupted, failed to write one of them) every requested path
that this run did not write is removed, and the removal is said on stderr.
"""

from __future__ import annotations

from pathlib import Path

import click

from sftdata.errors import UsageError
from sftdata.storage.atomic import atomic_write_bytes


class ReportWriteError(UsageError):
    """A report file could not be written (exit 2)."""


class ReportFiles:
    """The report paths a command was asked to write, and which of them this run wrote."""

    def __init__(self, *paths: Path | None) -> None:
        self.paths = [p for p in paths if p is not None]
        self.written: set[Path] = set()

    def write(self, path: Path | None, text: str) -> None:
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                raise IsADirectoryError(f"{path} is a folder")
            atomic_write_bytes(path, text.encode("utf-8"))
        except OSError as exc:
            raise ReportWriteError(f"cannot write {path}: {exc}") from None
        self.written.add(path)

    def drop_stale(self) -> None:
        """Remove each requested report this run did not write (an earlier run's), saying so."""
        for path in self.paths:
            if path in self.written or not (path.is_file() or path.is_symlink()):
                continue
            try:
                path.unlink()
                click.echo(f"removed {path}: an earlier report, and this audit did not finish", err=True)
            except OSError as exc:
                click.echo(f"cannot remove the earlier report {path} ({exc}): it does not describe this audit",
                           err=True)
