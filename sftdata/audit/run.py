"""``run_audit``: the audit of a prepared folder or of data other tools prepared, one driver over both."""


from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sftdata.audit.integrity import AuditError
from sftdata.audit.report import AuditReport
from sftdata.constants import MANIFEST_NAME
from sftdata.storage import Folder, is_uri, local_path_of

__all__ = ["run_audit"]


def _has_manifest(path: str | Path | Folder) -> bool:
    """A prepared folder (or any remote location, which only prepared folders can be)."""
    if isinstance(path, Folder) or is_uri(str(path)) and local_path_of(str(path)) is None:
        return True
    if any(c in str(path) for c in "*?["):
        return False  # a glob of data files
    local = Path(local_path_of(str(path)) or path)
    return (local / MANIFEST_NAME).exists() or not local.exists() or (local.is_dir() and not any(local.iterdir()))


def run_audit(path: str | Path | Folder, *, min_trained_fraction: float | None = None,
              max_rejected_fraction: float | None = None, check_integrity: bool = True,
              sources: Sequence[str | Path] | None = None, max_per_rule: int = 1000,
              labels_column: str | None = None, mask_column: str | None = None, shifted: bool | None = None,
              tokenizer: str | None = None, template: str | None = None, workers: int | None = None,
              labels: str | None = None, trainer: str | None = None) -> AuditReport:
    """Audit a prepared folder, or (no manifest.json) token data that another tool prepared: a
    ``datasets`` folder, Parquet / Arrow / JSON Lines files or a glob (see `sftdata.audit.external`).
    Raises `AuditError` when it cannot be audited at all (exit 2; `MalformedDataError` for data
    the rules cannot be applied to); otherwise every finding is in the report and ``report.ok``
    says whether all rules hold.

    Thresholds left as None are read from the manifest's ``pipeline.audit`` settings, if any.
    ``labels_column``, ``mask_column``, ``labels`` (the convention: unshifted or shifted),
    ``trainer`` (whose convention to read the labels in), ``shifted`` (the older spelling of
    ``labels``), ``tokenizer`` and ``template`` are for data without a manifest (the manifest says
    all of that for a prepared folder). ``workers``: processes for a local folder's row pass
    (default: one per CPU; the report is the same for any number).
    """
    from sftdata.audit.driver import drive

    if not _has_manifest(path):
        from sftdata.audit.external import ForeignSource

        return drive(ForeignSource(local_path_of(str(path)) or str(path), min_trained_fraction=min_trained_fraction,
                                   sources=sources, labels_column=labels_column, mask_column=mask_column,
                                   tokenizer=tokenizer, template=template, labels=labels, trainer=trainer,
                                   shifted=shifted), max_per_rule)
    given = {"--labels-column": labels_column, "--mask-column": mask_column, "--shifted": shifted,
             "--labels": labels, "--trainer": trainer, "--tokenizer": tokenizer, "--template": template}
    if any(v is not None for v in given.values()):
        raise AuditError(f"{', '.join(k for k, v in given.items() if v is not None)}: only for data without a "
                         "manifest (a prepared folder's manifest says how it was made)")
    from sftdata.audit.prepared import PreparedSource

    thresholds = {"min_trained_fraction": min_trained_fraction, "max_rejected_fraction": max_rejected_fraction}
    return drive(PreparedSource(path, thresholds=thresholds, check_integrity=check_integrity, sources=sources,
                                max_per_rule=max_per_rule, workers=workers), max_per_rule)
