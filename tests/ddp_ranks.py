"""Run under `torchrun --nproc-per-node N`: each rank writes the rows of its training micro-batches.

Used by tests/training/test_batch_tokens.py to check, through the Trainer's accelerate-prepared dataloader in
real processes, that the ranks share every row once and get equal numbers of micro-batches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sftdata.training.launcher import TrainOptions, build_trainer
from sftdata.training.tiny_model import TINY_SPEC


def main(data: Path, out: Path, budget: int) -> None:
    run = build_trainer(TrainOptions(data_dir=data, model=TINY_SPEC, output_dir=out / "model", max_steps=1,
                                     batch_tokens=budget, skip_audit=True, overrides=["use_cpu=true"]),
                        log=lambda _: None)
    loader = run.trainer.get_train_dataloader()
    batches = [[ids[: int(m.sum())].tolist() for ids, m in zip(b["input_ids"], b["attention_mask"], strict=True)]
               for b in loader]
    args = run.trainer.args
    (out / f"rank{args.process_index}.json").write_text(json.dumps(
        {"world": args.world_size, "len": len(loader), "batches": batches}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
