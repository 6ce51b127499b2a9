"""A mix against a plain run over the same inputs: the overhead of selecting and splitting.

    python benchmarks/bench_mix.py [--records 20000] [--repeats 3] [--workers 2] [--tree PATH] [--base PATH]

Three JSON Lines files of generated records (``tests.synth``): a plain ``sftdata run`` over all
three, and a mix of the same three as sources (every record taken, a 5% eval split per source),
alternated so a busy machine slows both alike. Prints each run's wall time and CPU time (the
driver's, its workers', and the process tree's: user + system), the medians and the mix's
overhead in percent, then each pair's overhead (a mix against the plain run just before it) and
their median: on a noisy machine the pairs show the spread. ``--tree``: the source tree whose
``sftdata`` runs (default: this one), to compare two versions with the same script and inputs;
``--base``: another tree whose plain run and mix alternate with this one's in the same loop (both
trees' overheads from one run).
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

from benchmarks.ab_trees import compile_tree  # noqa: E402 - after the path is set


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


# the command in a process of its own that, on exit, writes its CPU and its reaped workers' (user + system)
_RUN = ("import atexit, resource, sys\n"
        "def _cpu(path=sys.argv[1]):\n"
        "    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "    with open(path, 'w') as f:\n"
        "        f.write(f'{own.ru_utime + own.ru_stime} {kids.ru_utime + kids.ru_stime}')\n"
        "atexit.register(_cpu)\n"
        "sys.argv = ['sftdata', *sys.argv[2:]]\n"
        "from sftdata.cli import main\n"
        "main()\n")


def timed(args: list[str], tree: Path, scratch: Path) -> tuple[float, float, float]:
    """(wall, driver CPU, workers' CPU) of one ``sftdata`` command, in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _RUN, str(scratch), *args], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(tree)})
    wall = time.perf_counter() - start
    driver, workers = map(float, scratch.read_text().split())
    return wall, driver, workers


def report(name: str, runs: list[tuple[float, float, float]]) -> tuple[float, float, float, float]:
    """Print one command's runs; returns the medians (wall, driver, workers, tree)."""
    med = [statistics.median(r[k] for r in runs) for k in range(3)]
    tree = statistics.median(r[1] + r[2] for r in runs)
    print(f"{name}: wall {', '.join(f'{r[0]:.2f}' for r in runs)} s (median {med[0]:.2f}); CPU tree "
          f"{', '.join(f'{r[1] + r[2]:.2f}' for r in runs)} s (median {tree:.2f}: driver {med[1]:.2f}, "
          f"workers {med[2]:.2f})")
    return med[0], med[1], med[2], tree


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tree", type=Path, default=ROOT, help="the source tree to run sftdata from")
    ap.add_argument("--base", type=Path, help="another source tree whose plain run and mix alternate with these")
    a = ap.parse_args()
    trees = {"": a.tree, **({"base: ": a.base} if a.base else {})}
    for tree in trees.values():
        compile_tree(tree)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = write_inputs(d, a.records)
        mix = recipe(d, files)
        common = ["--workers", str(a.workers), "--no-audit", "--overwrite"]
        runs: dict[str, tuple[list, list]] = {label: ([], []) for label in trees}
        for _ in range(a.repeats):
            for label, tree in trees.items():
                plain_t, mix_t = runs[label]
                plain_t.append(timed(["run", *[x for f in files for x in ("--input", str(f))], "--output",
                                      str(d / f"plain{len(label)}"), *common], tree, d / "cpu"))
                mix_t.append(timed(["run", str(mix), "--output", str(d / f"mix{len(label)}"), *common], tree, d / "cpu"))
        for label, (plain_t, mix_t) in runs.items():
            overhead(label, plain_t, mix_t)


def overhead(label: str, plain_t: list, mix_t: list) -> None:
    """Print one tree's runs, the mix's overhead on the medians and each pair's."""
    p, m = report(f"{label}plain run", plain_t), report(f"{label}mix + split", mix_t)
    print(f"{label}overhead: wall {100 * (m[0] - p[0]) / p[0]:.0f}%, CPU of the tree {100 * (m[3] - p[3]) / p[3]:.0f}% "
          f"(driver {m[1] - p[1]:+.2f} s, workers {m[2] - p[2]:+.2f} s)")
    pairs = [100 * (b[0] - a[0]) / a[0] for a, b in zip(plain_t, mix_t, strict=True)]
    cpu = [100 * (sum(b[1:]) - sum(a[1:])) / sum(a[1:]) for a, b in zip(plain_t, mix_t, strict=True)]
    print(f"{label}pairs (each mix against the plain run just before it): wall {', '.join(f'{x:+.0f}' for x in pairs)} % "
          f"(median {statistics.median(pairs):+.1f} %); CPU {', '.join(f'{x:+.0f}' for x in cpu)} % "
          f"(median {statistics.median(cpu):+.1f} %)")


if __name__ == "__main__":
    main()
