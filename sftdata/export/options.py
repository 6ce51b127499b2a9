"""The settings one export runs with, shared by every target's writer.

Why its own module: the writers, the driver and the click command all take the same options, and
a frozen dataclass keeps them from drifting apart or being changed half-way through an export.
"""

from __future__ import annotations

from dataclasses import dataclass

from sftdata.export.targets import Target


@dataclass(frozen=True)
class ExportOptions:
    target: Target
    unpack: bool = False          # write one conversation per row even where packed rows could stay packed
    max_seq_len: int | None = None  # torchtune's packed row length; default: the pipeline's max_length

    def keep_packing(self, packed_source: bool) -> bool:
        from sftdata.export.targets import INFO

        return packed_source and INFO[self.target].keeps_packing and not self.unpack
