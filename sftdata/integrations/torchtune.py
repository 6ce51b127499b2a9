"""``prepared``: a torchtune dataset component that reads an ``sftdata export --to torchtune`` folder.

Why: torchtune has no builder for pre-tokenized data; its recipes call
``config.instantiate(cfg.dataset, tokenizer)``, so any callable taking the tokenizer first can be a
dataset. The config line is ``dataset: {_component_: sftdata.integrations.torchtune.prepared,
path: OUT}`` (add ``packed: true`` for a packed export, so the recipe picks
``padded_collate_packed``). The export holds labels aligned with ``tokens``, as torchtune 0.6.x's
``SFTDataset`` emits them (its recipes shift). torchtune's ``main`` branch shifts inside
``SFTDataset`` instead and its recipes do not; this module reads which one is installed and, for
that one, shifts each conversation's labels here (last position -100), so one export trains the
same tokens under both. Nothing here imports torch or torchtune until a dataset is built.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100


def dataset_shifts_labels() -> bool:
    """Whether the installed torchtune's ``SFTDataset`` shifts labels itself (its recipes then do not)."""
    from torchtune.datasets import _sft

    return "Shift labels" in inspect.getsource(_sft)


def _shift(labels: list[int], seq_lens: list[int] | None) -> list[int]:
    out = labels[1:] + [IGNORE_INDEX]
    if seq_lens:
        end = 0
        for n in seq_lens:
            end += n
            if end:
                out[end - 1] = IGNORE_INDEX
    return out


class PreparedDataset:
    """Map-style dataset over an export; packed rows come back as tensors, as ``PackedDataset``'s do."""

    def __init__(self, table: Any, packed: bool, shift: bool) -> None:
        self._table = table
        self.packed = packed
        self._shift = shift

    def __len__(self) -> int:
        return len(self._table)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self._table[int(index)]
        labels = list(row["labels"])
        if self._shift:
            labels = _shift(labels, row.get("seq_lens"))
        if not self.packed:
            return {"tokens": list(row["tokens"]), "labels": labels}
        import torch

        return {"tokens": torch.tensor(row["tokens"], dtype=torch.long),
                "labels": torch.tensor(labels, dtype=torch.long),
                "input_pos": torch.tensor(row["input_pos"], dtype=torch.long),
                "seq_lens": torch.tensor(row["seq_lens"], dtype=torch.long)}


def prepared(tokenizer: Any = None, *, path: str, packed: bool | None = None, split: str = "train",
             shift_labels: bool | None = None) -> PreparedDataset:
    """The export at ``path`` as a torchtune dataset. ``tokenizer`` is accepted and unused (the rows are
    already tokens). ``packed`` must match the export (the recipe reads the same flag to choose
    ``padded_collate_packed``, so a mismatch would mix conversations); ``shift_labels`` defaults to what
    the installed torchtune's ``SFTDataset`` does."""
    import datasets

    root = Path(path)
    manifest = json.loads((root / "export_manifest.json").read_text())
    if manifest.get("target") != "torchtune":
        raise ValueError(f"{root} is a {manifest.get('target')!r} export, not a torchtune one")
    is_packed = bool(manifest["layout"]["packed"])
    if bool(packed) != is_packed:  # the recipe picks its collator from this flag (default false)
        raise ValueError(f"{root} holds {'packed' if is_packed else 'unpacked'} rows but the config says "
                         f"packed: {packed}; set packed: {str(is_packed).lower()}")
    data = datasets.load_from_disk(str(root))
    if isinstance(data, datasets.DatasetDict):
        data = data[split]
    shift = dataset_shifts_labels() if shift_labels is None else shift_labels
    return PreparedDataset(data, is_packed, shift)
