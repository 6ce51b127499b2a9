"""Exports of a prepared folder into the layouts other trainers read as they are.

Why a package of its own: each trainer has its own label convention (unshifted, shifted, rolled
mask, prompt/response split) and its own idea of packing, and getting one of them wrong fails
silently. Each target is one module, checked against that trainer's own loader and collator code
(``tests/interop``); the driver in ``core`` holds the checks and the atomic commit they share.
The package exports nothing itself (its command module stays light to import): ``export_folder``
is in ``sftdata.export.core``, ``Target`` in ``sftdata.export.targets``, ``ExportError`` in
``sftdata.errors``.
"""
