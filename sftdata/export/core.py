"""``export_folder``: one prepared folder (plus an optional validation folder) into one target's layout.

Why a driver apart from the writers: the checks that protect the user are the same for every
target and must all happen before anything is written — the folder is a finished, audited run; the
target can represent its rows (a trainer that re-packs gets unpacked rows only when asked, never
silently); OUT is empty or ``--overwrite`` was given — and the commit (staging folder, export
manifest last, one rename) is shared, so no target can leave a half-written OUT.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sftdata.errors import OutputFolderError
from sftdata.export.commit import EXPORT_MANIFEST, export_manifest, write_dataset_dict, write_json
from sftdata.export.options import ExportOptions
from sftdata.export.publish import publishing
from sftdata.export.source import ExportError, Source, open_source
from sftdata.export.targets import INFO, Target
from sftdata.output import check_location

Writer = Callable[[Source, Path, ExportOptions], dict]


def _writer(target: Target) -> Writer:
    if target in (Target.HF, Target.AXOLOTL, Target.LLAMA_FACTORY):
        from sftdata.export.hf import write_hf

        return write_hf
    if target is Target.TORCHTUNE:
        from sftdata.export.torchtune import write_torchtune

        return write_torchtune
    if target is Target.PARQUET:
        from sftdata.export.columnar import write_parquet

        return write_parquet
    if target is Target.MEGATRON_BRIDGE:
        from sftdata.export.columnar import write_megatron

        return write_megatron
    if target is Target.MDS:
        from sftdata.export.mds import write_mds

        return write_mds
    if target is Target.OLMO_CORE:
        from sftdata.export.olmo import write_olmo

        return write_olmo
    raise ExportError(f"unknown target {target!r}")  # pragma: no cover - the Enum is closed


def _check_representable(source: Source, opts: ExportOptions) -> None:
    info = INFO[opts.target]
    if source.packed and info.repacks and not opts.unpack:
        raise ExportError(
            f"{source.path} holds packed rows, and {opts.target.value} packs rows itself (it would drop or "
            "overwrite the packing); pass --unpack to export one conversation per row, or export an unpacked run")


def export_folder(src: str | Path, target: Target | str, out: str | Path, *, validation: str | Path | None = None,
                  overwrite: bool = False, skip_audit: bool = False, unpack: bool = False,
                  max_seq_len: int | None = None) -> dict:
    """Export the prepared folder ``src`` for ``target`` into ``out``; returns the export manifest.

    Raises `ExportError` (nothing written) for a folder that is not a finished run, fails the audit
    (unless ``skip_audit``), holds rows the target cannot represent, or an OUT that ``run``'s folder
    rules refuse (`sftdata.output`; with ``overwrite`` OUT must be an earlier export holding only
    export files). The export replaces OUT in one step (`sftdata.export.publish`).
    """
    opts = ExportOptions(target=Target(target), unpack=unpack, max_seq_len=max_seq_len)
    info = INFO[opts.target]
    out = Path(out)
    if validation is not None and not info.validation:
        raise ExportError(f"{opts.target.value} exports have no validation split; export the folder on its own")
    # run's refusals (sftdata.output): not /, home, the current folder, nor a folder that holds a
    # source or lies in one; publishing() then refuses an OUT that is not an earlier export
    given = [Path(p) for p in (src, validation) if p is not None]
    try:
        check_location(str(out), given, [str(p) for p in given])
    except OutputFolderError as exc:
        raise ExportError(str(exc)) from None
    sources = {"train": open_source(src, skip_audit=skip_audit)}
    if validation is not None:
        sources["validation"] = open_source(validation, skip_audit=skip_audit)
    for source in sources.values():
        _check_representable(source, opts)
    writer = _writer(opts.target)
    counts: dict[str, dict] = {}
    with publishing(out, overwrite) as tmp:
        for split, source in sources.items():
            counts[split] = writer(source, tmp / split if validation is not None else tmp, opts)
        if validation is not None:
            write_dataset_dict(tmp, list(sources))
        packed = {split: opts.keep_packing(s.packed) for split, s in sources.items()}
        layout = {"packed": packed["train"], "splits": list(sources) if validation is not None else None,
                  "unpacked_from_packed": any(s.packed and not packed[k] for k, s in sources.items())}
        manifest = export_manifest(opts.target.value,
                                   {k: {"path": str(s.path.resolve()), "manifest_sha256": s.manifest_sha256}
                                    for k, s in sources.items()}, counts, layout)
        write_json(tmp / EXPORT_MANIFEST, manifest)
    return manifest
