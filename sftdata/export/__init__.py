"""Exports of a prepared folder into the layouts other trainers read as they are.

Why a package of its own: each trainer has its own label convention (unshifted, shifted, rolled
mask, prompt/response split) and its own idea of packing, and getting one of them wrong fails
silently. Each target is one module, checked against that trainer's own loader and collator code
(``tests/interop``); the driver in ``core`` holds the checks and the atomic commit they share.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sftdata.export.core import export_folder
    from sftdata.export.source import ExportError
    from sftdata.export.targets import Target

__all__ = ["ExportError", "Target", "export_folder"]
# imported on first use (numpy, pyarrow): `sftdata --help` lists `export` without them
_HOME = {"export_folder": "sftdata.export.core", "ExportError": "sftdata.export.source", "Target": "sftdata.export.targets"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOME[name]), name)
