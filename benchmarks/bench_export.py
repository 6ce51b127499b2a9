"""Export throughput beside `sftdata run`'s, measured in the same invocation on the same folder.

Why: `sftdata export` should cost a small fraction of `run` (it relabels a token stream that is
already there), and a number measured on another day or machine says nothing on a shared 2-core
box. So this script runs `sftdata run` once (plain and packed), then every export target over its
output, all as subprocesses timed the same way, and prints tokens/s and export time / run time.

    python benchmarks/bench_export.py                  # shared corpus x 2 (or 3,000 synth records)
    python benchmarks/bench_export.py --records 300    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "sft-mix.jsonl"
TARGETS = ["hf", "llama-factory", "torchtune", "megatron-bridge", "mds", "olmo-core", "parquet"]


def sftdata(*args: str) -> float:
    """Run the CLI in a subprocess; returns wall seconds."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "sftdata.cli", *args], capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"sftdata {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return took


def corpus(tmp: Path, records: int | None, copies: int) -> tuple[Path, str]:
    out = tmp / "corpus.jsonl"
    if records is None and DEFAULT_CORPUS.is_file():
        text = DEFAULT_CORPUS.read_text(encoding="utf-8")
        out.write_text(text * copies, encoding="utf-8")
        return out, f"{DEFAULT_CORPUS} x {copies}"
    sys.path.insert(0, str(ROOT))
    from tests.synth import generate_records, write_jsonl

    n = records or 3000
    write_jsonl(out, generate_records(n, seed=1))
    return out, f"{n} tests.synth records (seed 1)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, help="use N synth records instead of the shared corpus")
    p.add_argument("--copies", type=int, default=2, help="repeat the shared corpus N times (default 2)")
    p.add_argument("--json", type=Path, help="also write the measurements as JSON")
    a = p.parse_args(argv)
    results: dict = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]), "rows": []}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data, what = corpus(tmp, a.records, a.copies)
        print(f"corpus: {what} ({data.stat().st_size / 1e6:.1f} MB); cores: {os.cpu_count()}")
        one = tmp / "one.jsonl"
        one.write_text(data.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
        sftdata("run", "--input", str(one), "--output", str(tmp / "run-one"), "--workers", "1", "--no-audit")
        fixed = sftdata("export", str(tmp / "run-one"), "--to", "hf", "--output", str(tmp / "one-hf"), "--skip-audit")
        print(f"fixed cost of an export (one record, --to hf --skip-audit): {fixed:.2f} s")
        results["fixed_export_seconds"] = fixed
        for label, extra in (("plain", []), ("packed", ["--packing", "bfd"])):
            run_dir = tmp / f"run-{label}"
            run_s = sftdata("run", "--input", str(data), "--output", str(run_dir), "--workers", "2",
                            "--no-audit", *extra)
            tokens = json.loads((run_dir / "manifest.json").read_text())["totals"]["tokens"]
            print(f"\n{label}: sftdata run --workers 2 --no-audit: {tokens:,} tokens in {run_s:.2f} s "
                  f"= {tokens / run_s:,.0f} tokens/s")
            print(f"{'export (subprocess)':<28} {'wall s':>7} {'tokens/s':>12} {'of run':>7}")
            rows = [("run", run_s)]
            for target in TARGETS:
                args = ["export", str(run_dir), "--to", target, "--output", str(tmp / f"{label}-{target}"),
                        "--skip-audit"]
                if label == "packed" and target in ("hf", "mds", "olmo-core"):
                    args.append("--unpack")
                rows.append((target, sftdata(*args)))
            rows.append(("hf (with the audit)", sftdata("export", str(run_dir), "--to", "hf", "--output",
                                                         str(tmp / f"{label}-hf-audited"),
                                                         *(["--unpack"] if label == "packed" else []))))
            sys.path.insert(0, str(ROOT))
            from sftdata.export.core import export_folder

            in_process = []
            for target in TARGETS:  # the export itself, without interpreter start and imports
                start = time.perf_counter()
                export_folder(run_dir, target, tmp / f"{label}-{target}-inproc", skip_audit=True,
                              unpack=label == "packed" and target in ("hf", "mds", "olmo-core"))
                in_process.append((target, time.perf_counter() - start))
            for name, s in rows[1:]:
                print(f"{name:<28} {s:>7.2f} {tokens / s:>12,.0f} {s / run_s:>6.0%}")
            print("in-process export_folder (no start-up, no audit): " + ", ".join(
                f"{n} {tokens / s:,.0f} tok/s ({s:.2f} s, {s / run_s:.0%} of run)" for n, s in in_process))
            results["rows"] += [{"corpus": label, "step": n, "seconds": s, "tokens": tokens} for n, s in rows]
            results["rows"] += [{"corpus": label, "step": f"{n} in-process", "seconds": s, "tokens": tokens}
                                for n, s in in_process]
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
