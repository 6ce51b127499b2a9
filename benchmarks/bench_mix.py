"""A mix against a plain run over the same inputs: the overhead of selecting and splitting.

    python benchmarks/bench_mix.py [--records 20000] [--repeats 3] [--workers 2]

Three JSON Lines files of generated records (``tests.synth``): a plain ``sftdata run`` over all
three, and a mix of the same three as sources (every record taken, a 5% eval split per source),
alternated so a busy machine slows both alike. Prints each run's wall time, the medians and the
mix's overhead in percent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_inputs(d: Path, records: int) -> list[Path]:
    from tests.conftest import write_jsonl
    from tests.synth import generate_records

    per = records // 3
    return [write_jsonl(d / f"s{i}.jsonl", generate_records(per, seed=100 + i)) for i in range(3)]


def recipe(d: Path, files: list[Path]) -> Path:
    sources = "".join(f"  - name: s{i}\n    input: {f}\n" for i, f in enumerate(files))
    path = d / "mix.yaml"
    path.write_text(f"seed: 1\nsources:\n{sources}split:\n  eval: {{fraction: 0.05}}\n  per_source: true\n")
    return path


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sftdata.cli", *args], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = write_inputs(d, a.records)
        mix = recipe(d, files)
        common = ["--workers", str(a.workers), "--no-audit", "--overwrite"]
        plain_t, mix_t = [], []
        for _ in range(a.repeats):
            plain_t.append(timed(["run", *[x for f in files for x in ("--input", str(f))], "--output",
                                  str(d / "plain"), *common]))
            mix_t.append(timed(["run", str(mix), "--output", str(d / "mix"), *common]))
        p, m = statistics.median(plain_t), statistics.median(mix_t)
        print(f"plain run: {', '.join(f'{t:.2f}' for t in plain_t)} s (median {p:.2f})")
        print(f"mix + split: {', '.join(f'{t:.2f}' for t in mix_t)} s (median {m:.2f})")
        print(f"overhead: {100 * (m - p) / p:.0f}%")


if __name__ == "__main__":
    main()
