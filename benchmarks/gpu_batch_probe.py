"""GPU check for ``--batch-size auto`` / ``--batch-tokens auto``: the chosen size trains with no OOM.

Why a script and not a test: the suite runs on CPU. Anyone with a CUDA device runs this once:

    python benchmarks/gpu_batch_probe.py                          # tiny model, token budget, 50 steps
    python benchmarks/gpu_batch_probe.py --unit rows --model ./Llama-3.2-1B-Instruct --bf16

It prepares skewed generated records with ``sftdata run`` (every 5th record's replies repeated,
so a few rows are much longer), lets ``sftdata train``'s probe pick the size on ``cuda``, trains
``--steps`` optimizer steps with it, and checks that no step ran out of memory and that the
training peak (``torch.cuda.max_memory_allocated``) stayed under the probe's limit (free memory less
the margin). It prints the decision and one JSON line; exit status 0 when both hold, 1 if not,
2 without a CUDA device. It has not been run on a GPU by the change that added it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.synth


def skewed_jsonl(path: Path, n: int, seed: int) -> Path:
    from tests.synth import generate_records

    with open(path, "w", encoding="utf-8") as f:
        for i, rec in enumerate(generate_records(n, seed=seed, tools=False)):
            rec = copy.deepcopy(rec)
            if i % 5 == 0:
                for m in rec["messages"]:
                    if m["role"] == "assistant" and isinstance(m.get("content"), str):
                        m["content"] = " ".join([m["content"]] * 12)
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:tiny-llama3")
    ap.add_argument("--unit", choices=["tokens", "rows"], default="tokens")
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--margin", type=float, default=0.10)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--padding-free", action="store_true")
    ap.add_argument("--global-batch", type=int,
                    help="rows or tokens per optimizer step, the probe's cap (default: 256 rows; tokens: no cap)")
    ap.add_argument("--work", type=Path, help="keep the prepared data and outputs here")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this check needs one", file=sys.stderr)
        return 2
    from click.testing import CliRunner

    from sftdata.cli import main as cli
    from sftdata.training.launcher import TrainOptions, build_trainer

    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-batch-probe-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not (data / "manifest.json").is_file():
        src = skewed_jsonl(work / "records.jsonl", args.records, seed=19)
        res = CliRunner().invoke(cli, ["run", "--input", str(src), "--output", str(data), "--workers", "4",
                                       "--no-audit", "--max-length", "8192", "--overwrite"])
        if res.exit_code != 0:
            print(res.output, file=sys.stderr)
            return 1
    auto = {"batch_tokens": "auto", "global_batch_tokens": args.global_batch} if args.unit == "tokens" else {
        "batch_size": "auto", "global_batch_size": args.global_batch or 256}
    opts = TrainOptions(data_dir=data, model=args.model, output_dir=work / "model", max_steps=args.steps,
                        bf16=args.bf16 or None, padding_free=args.padding_free or None, skip_audit=True,
                        memory_margin=args.margin, overrides=["save_strategy=no", "logging_steps=10"], **auto)
    run = build_trainer(opts, log=lambda m: print(m, file=sys.stderr))
    decision = run.decision
    torch.cuda.reset_peak_memory_stats()
    oom = None
    try:
        result = run.trainer.train()
        steps = result.global_step
    except torch.OutOfMemoryError as exc:
        oom, steps = str(exc).splitlines()[0], run.trainer.state.global_step
    peak = torch.cuda.max_memory_allocated()
    ok = oom is None and steps == args.steps and peak <= decision.memory_limit
    print(json.dumps({"ok": ok, "device": decision.device, "unit": decision.unit, "size": decision.size,
                      "grad_accum": decision.grad_accum, "steps": steps, "oom": oom,
                      "probe_peak": decision.peak, "train_peak": peak, "limit": decision.memory_limit,
                      "memory_total": decision.memory_total}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
