"""The collator: shard rows become tensors exactly as written, padded or concatenated.

Why our own: TRL's collators rebuild labels or drop ``position_ids``; this one only pads
(``input_ids`` with the pad id, ``labels`` with ``IGNORE_INDEX``) or concatenates rows into one
padding-free row whose ``position_ids`` restart per conversation. The token-budget sampler
(:mod:`sftdata.planning.token_batches`) counts a batch's size the way this collator materialises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sftdata.constants import IGNORE_INDEX


@dataclass
class ShardCollator:
    """Batches shard rows as they are: right-padded, or concatenated into one row (padding-free).

    Padded: ``input_ids`` padded with ``pad_id``, ``labels`` with ``IGNORE_INDEX``, plus an
    ``attention_mask``. Padding-free: one row, ``position_ids`` restarting per conversation (the
    row's ``position_ids``, else its ``seq_lengths``, else one conversation per row), no
    ``attention_mask``, and the label at each conversation's first position ignored.
    """

    pad_id: int
    padding_free: bool = False
    pad_to_multiple_of: int | None = None
    varlen_kwargs: bool = False  # add cu_seq_lens_*/max_length_* (flash attention's varlen inputs)

    def _width(self, n: int) -> int:
        m = self.pad_to_multiple_of
        return -(-n // m) * m if m else n

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not self.padding_free:
            shape = (len(rows), self._width(max(len(r["input_ids"]) for r in rows)))
            ids, labels = torch.full(shape, self.pad_id), torch.full(shape, IGNORE_INDEX)
            mask = torch.zeros(shape, dtype=torch.long)
            for i, r in enumerate(rows):
                n = len(r["input_ids"])
                ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
            return {"input_ids": ids, "labels": labels, "attention_mask": mask}
        ids = torch.tensor([t for r in rows for t in r["input_ids"]])
        labels = torch.tensor([t for r in rows for t in r["labels"]])
        pos = torch.cat([self._positions(r, torch) for r in rows])
        labels[pos == 0] = IGNORE_INDEX  # never predict a conversation's first token from the one before
        extra = self._width(len(ids)) - len(ids)  # padding: each token its own ignored sequence
        ids = torch.cat([ids, torch.full((extra,), self.pad_id)])
        labels = torch.cat([labels, torch.full((extra,), IGNORE_INDEX)])
        pos = torch.cat([pos, torch.zeros(extra, dtype=torch.long)])
        out = {"input_ids": ids[None], "labels": labels[None], "position_ids": pos[None]}
        if self.varlen_kwargs:
            cu = torch.cat([(pos == 0).nonzero().flatten(), torch.tensor([len(pos)])]).to(torch.int32)
            out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=int(cu.diff().max()))
            out["max_length_k"] = out["max_length_q"]
        return out

    @staticmethod
    def _positions(row: dict[str, Any], torch: Any) -> Any:
        n = len(row["input_ids"])
        if row.get("position_ids") is not None:
            pos = torch.tensor(row["position_ids"], dtype=torch.long)
        elif row.get("seq_lengths") is not None:
            pos = torch.cat([torch.arange(k) for k in row["seq_lengths"]] or [torch.arange(0)])
        else:
            pos = torch.arange(n)
        if len(pos) != n:
            raise ValueError(f"a row has {n} tokens but its position_ids/seq_lengths cover {len(pos)}")
        return pos

