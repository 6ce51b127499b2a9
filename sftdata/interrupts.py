"""SIGTERM ends a command like Ctrl-C: as a ``KeyboardInterrupt`` that the command turns into exit 130.

Why a module of its own: ``run`` and ``export`` (and any later command that writes a folder) must
stop the same way when a scheduler or ``kill`` stops them: the ``finally`` blocks that remove a
staging folder or release the folder's lock run, and the exit code says "interrupted" (130), not
"killed by a signal" (143) with the staging left behind.

Why a flag besides the exception: a C extension that polls for signals while it works (pyarrow
does) receives the ``KeyboardInterrupt`` the handler raises and may clear it, and the command
then went on to publish its output after a stop was asked for. ``check_interrupted()`` before an
irreversible step (export's exchange of folders) raises it again from the flag.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_STOP: list[int] = []  # the signals received while interrupts_as_keyboard is active


def check_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` when SIGINT or SIGTERM arrived in an ``interrupts_as_keyboard`` block."""
    if _STOP:
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_as_keyboard() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT raise ``KeyboardInterrupt`` in the main thread, and
    ``check_interrupted`` raises it again later should a C extension have swallowed the first."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def stop(signum: int, frame: object) -> None:
        _STOP.append(signum)
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        _STOP.clear()
