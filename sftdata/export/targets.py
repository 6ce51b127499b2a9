"""The export targets, as one string ``Enum``, and what each needs from the prepared rows.

Why a table of facts rather than a class per target: the CLI, the docs and the tests all need
to know, without importing the writer, whether a target keeps packed rows (and so must be
refused or unpacked otherwise) and whether it is a ``datasets`` folder that ``load_from_disk``
opens, so those facts live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Target(str, Enum):
    HF = "hf"
    AXOLOTL = "axolotl"
    LLAMA_FACTORY = "llama-factory"
    TORCHTUNE = "torchtune"
    MEGATRON_BRIDGE = "megatron-bridge"
    MDS = "mds"
    OLMO_CORE = "olmo-core"
    PARQUET = "parquet"


@dataclass(frozen=True)
class TargetInfo:
    """``keeps_packing``: packed source rows stay packed. ``repacks``: the trainer packs rows itself,
    so packed rows must be unpacked (``--unpack``) or the export is refused. ``validation``: a second
    prepared folder can become a validation split."""

    keeps_packing: bool
    repacks: bool
    validation: bool
    summary: str


INFO: dict[Target, TargetInfo] = {
    Target.HF: TargetInfo(False, True, True, "datasets folder: input_ids, attention_mask (ones), labels"),
    Target.AXOLOTL: TargetInfo(False, True, False, "datasets folder with exactly input_ids, attention_mask, labels"),
    Target.LLAMA_FACTORY: TargetInfo(True, False, True,
                                     "datasets folder (or DatasetDict train/validation) for tokenized_path"),
    Target.TORCHTUNE: TargetInfo(True, False, True, "tokens + shifted labels; packed: input_pos, seq_lens, padded"),
    Target.MEGATRON_BRIDGE: TargetInfo(True, False, True, "packed Parquet *.idx.parquet + packing metadata JSON"),
    Target.MDS: TargetInfo(False, True, False, "MosaicML streaming MDS shards in LLM Foundry's turns format"),
    Target.OLMO_CORE: TargetInfo(False, True, False, "token id + label mask memmaps for OLMo-core SFT"),
    Target.PARQUET: TargetInfo(True, False, False, "Parquet shards of the prepared columns"),
}
