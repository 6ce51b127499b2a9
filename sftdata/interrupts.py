"""SIGTERM ends a command like Ctrl-C: as a ``KeyboardInterrupt`` that the command turns into exit 130.

Why a module of its own: ``run`` and ``export`` (and any later command that writes a folder) must
stop the same way when a scheduler or ``kill`` stops them: the ``finally`` blocks that remove a
staging folder or release the folder's lock run, and the exit code says "interrupted" (130), not
"killed by a signal" (143) with the staging left behind.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def interrupts_as_keyboard() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``KeyboardInterrupt`` in the main thread (as SIGINT does)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
