"""Test hooks that kill this process at exact points of the commit protocol.

Why in the package and not in the tests: the kill/resume tests must die *inside* a real run, in a
worker or in the driver, between two particular writes. ``SFTDATA_FAULT=name:N`` SIGKILLs the
process the N-th time ``fault_point(name)`` is reached; unset, each call is one dict lookup.
"""

from __future__ import annotations

import os
import signal

_FAULT_COUNTS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process when ``SFTDATA_FAULT`` names this point and its count is reached."""
    spec = os.environ.get("SFTDATA_FAULT")
    if not spec or not spec.startswith(name + ":"):
        return
    _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if _FAULT_COUNTS[name] >= int(spec.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)
