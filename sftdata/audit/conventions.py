"""Which labels convention the audit of data without a manifest assumes, and why.

Why an explicit convention instead of detection: labels already shifted left by one (``labels[i]
== input_ids[i + 1]``) are correct for a trainer that does not shift and wrong for every Hugging
Face-style trainer, which shifts again and so trains each token to predict the one after next.
The data alone cannot say which trainer will read it, so detection may only *report* a shift:
it never decides the reading. The convention comes, in this order, from what the user names
(``--labels`` or ``--trainer``, or the older ``--shifted/--unshifted``), from what the data
declares (an ``export_manifest.json`` of ``sftdata export``, or Megatron-Bridge's packed layout,
whose ``loss_mask`` is rolled to the label position), and otherwise from the strict reading:
unshifted, ``labels[i]`` is ``input_ids[i]`` or -100. The report states which one it assumed and
where it came from; a named convention that contradicts the declared one fails
``label_convention``, and so does data that looks shifted the other way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sftdata.errors import AuditError

UNSHIFTED, SHIFTED = "unshifted", "shifted"
CONVENTIONS = (UNSHIFTED, SHIFTED)

# What each trainer's loader expects: HF-style trainers shift inside the loss, so the stored
# labels are unshifted; Megatron-Bridge stores its loss_mask rolled to the label position.
# torchtune 0.6.1 recipes shift the batch labels (its main branch moved the shift into the
# dataset: name --labels shifted for data prepared that way).
TRAINERS: dict[str, str] = {
    "trl": UNSHIFTED, "transformers": UNSHIFTED, "hf": UNSHIFTED, "axolotl": UNSHIFTED,
    "llama-factory": UNSHIFTED, "llamafactory": UNSHIFTED, "torchtune": UNSHIFTED, "olmo-core": UNSHIFTED,
    "llm-foundry": UNSHIFTED, "megatron-bridge": SHIFTED,
}
# `sftdata export --to TARGET` writes each target in its trainer's convention
EXPORT_TARGETS: dict[str, str] = {
    "hf": UNSHIFTED, "axolotl": UNSHIFTED, "llama-factory": UNSHIFTED, "torchtune": UNSHIFTED,
    "mds": UNSHIFTED, "olmo-core": UNSHIFTED, "parquet": UNSHIFTED, "megatron-bridge": SHIFTED,
}
EXPORT_MANIFEST = "export_manifest.json"
MEGATRON_COLUMN = "seq_start_id"  # Megatron-Bridge's packed Parquet: its loss_mask is rolled


@dataclass(frozen=True)
class Convention:
    """The reading the audit uses (``assumed``), where it came from, and the data's own claim."""

    assumed: str
    source: str  # "default", "--labels", "--trainer trl", "export_manifest.json (target ...)", ...
    named: bool  # the user named it
    declared: str | None = None  # what the data declares, if anything
    declared_by: str | None = None

    @property
    def shifted(self) -> bool:
        return self.assumed == SHIFTED

    def describe(self) -> str:
        what = ("unshifted: labels[i] is input_ids[i] or -100, the trainer shifts" if self.assumed == UNSHIFTED
                else "shifted: labels[i] is the target of position i (input_ids[i + 1]), the trainer does not shift")
        return f"{what} ({self.source})"

    def conflict(self) -> str | None:
        """A named convention that contradicts what the data declares, as a message."""
        if self.named and self.declared is not None and self.declared != self.assumed:
            return (f"{self.source} reads the labels as {self.assumed}, but {self.declared_by} declares them "
                    f"{self.declared}")
        return None

    def to_json(self) -> dict[str, object]:
        return {"assumed": self.assumed, "source": self.source, "declared": self.declared,
                "declared_by": self.declared_by}


def named_convention(labels: str | None, trainer: str | None, shifted: bool | None) -> tuple[str, str] | None:
    """(convention, how it was named) from the options, or None; contradicting options are refused."""
    named: list[tuple[str, str]] = []
    if labels is not None:
        if labels not in CONVENTIONS:
            raise AuditError(f"--labels {labels!r}: expected one of {', '.join(CONVENTIONS)}")
        named.append((labels, f"--labels {labels}"))
    if trainer is not None:
        if trainer not in TRAINERS:
            raise AuditError(f"--trainer {trainer!r}: expected one of {', '.join(sorted(TRAINERS))}")
        named.append((TRAINERS[trainer], f"--trainer {trainer}"))
    if shifted is not None:
        named.append((SHIFTED if shifted else UNSHIFTED, "--shifted" if shifted else "--unshifted"))
    if len({c for c, _ in named}) > 1:
        raise AuditError(f"{' and '.join(w for _, w in named)} name different label conventions")
    return named[0] if named else None


def declared_convention(location: str, parts: list[tuple[str, list[str]]]) -> tuple[str, str] | None:
    """What the data says about its labels: an ``export_manifest.json`` beside it (at the location,
    or beside the file or glob), or Megatron-Bridge's packed layout. ``parts``: (name, columns)."""
    base = Path(location.split("*")[0].split("?")[0].split("[")[0])
    for folder in (base, base.parent) if not base.is_dir() else (base,):
        path = folder / EXPORT_MANIFEST
        if path.is_file():
            try:
                target = json.loads(path.read_text(encoding="utf-8")).get("target")
            except (OSError, ValueError, AttributeError, RecursionError):
                target = None
            if target in EXPORT_TARGETS:
                return EXPORT_TARGETS[target], f"{EXPORT_MANIFEST} (sftdata export --to {target})"
    megatron = [name for name, columns in parts if MEGATRON_COLUMN in columns]
    if megatron:
        return SHIFTED, f"Megatron-Bridge's packed layout ({MEGATRON_COLUMN} in {megatron[0]}: a rolled loss_mask)"
    return None


def resolve(named: tuple[str, str] | None, declared: tuple[str, str] | None) -> Convention:
    """The convention to check with: named, else declared, else the strict unshifted reading."""
    d_conv, d_by = declared if declared else (None, None)
    if named:
        return Convention(named[0], named[1], True, d_conv, d_by)
    if declared:
        return Convention(declared[0], f"declared by {declared[1]}", False, d_conv, d_by)
    return Convention(UNSHIFTED, "default: the strict reading; name another with --labels or --trainer", False)
