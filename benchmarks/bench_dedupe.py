"""What ``--dedupe exact`` adds to a run's time (issue 31: at most 15 % at 256 copies).

    python benchmarks/bench_dedupe.py [--copies 256] [--repeats 3] [--workers 2] [--base TREE]
                                      [--duplicates half] [--no-change]

The input: the shared corpus copied N times by ``bench_copies.build_input`` (copy ``k``'s text
changed, so copies are not duplicates of each other; the corpus itself holds 313 exact duplicates
a copy); ``--duplicates half`` gives copies ``2j`` and ``2j+1`` the same text, ``--no-change``
makes every copy the same text (ids still differ). Alternated, so a busy machine slows every
command alike: ``run``, ``run --dedupe exact`` of this tree and, with ``--base``, ``run --dedupe
exact`` of another source tree (e.g. a worktree of the commit before a change). Prints each run's
wall and CPU seconds (the process tree's: the driver and its reaped workers, user + system), the
medians and the dedupe's overhead over the plain run in percent; the two dedupe folders are
compared file by file.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_copies import build_input  # noqa: E402
from bench_mix import compile_tree, report, timed  # noqa: E402

CORPUS = Path("/work/shared/corpora/sft-mix.jsonl")


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--base", type=Path, help="another source tree whose `run --dedupe exact` runs beside")
    ap.add_argument("--duplicates", choices=["none", "half"], default="none")
    ap.add_argument("--no-change", action="store_true", help="every copy the same text")
    a = ap.parse_args()
    if not a.corpus.exists():
        sys.exit(f"no corpus at {a.corpus}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        records = build_input(a.corpus, a.copies, d / "in.jsonl", a.duplicates == "half", not a.no_change)
        print(f"{records:,} records, {(d / 'in.jsonl').stat().st_size / 2**20:.0f} MiB, {a.copies} copies")
        common = ["--input", str(d / "in.jsonl"), "--workers", str(a.workers), "--no-audit", "--overwrite"]
        commands = {"run": (ROOT, ["--output", str(d / "plain")]),
                    "run --dedupe exact": (ROOT, ["--output", str(d / "dedupe"), "--dedupe", "exact"])}
        if a.base:
            commands["base: run --dedupe exact"] = (a.base, ["--output", str(d / "base"), "--dedupe", "exact"])
        for tree in {tree for tree, _ in commands.values()}:
            compile_tree(tree)  # as an install would (PYTHONDONTWRITEBYTECODE=1 recompiles every run)
        times: dict[str, list] = {name: [] for name in commands}
        for _ in range(a.repeats):
            for name, (tree, args) in commands.items():
                times[name].append(timed(["run", *common, *args], tree, d / "cpu"))
        med = {name: report(name, runs) for name, runs in times.items()}
        plain = med["run"]
        for name in list(commands)[1:]:
            m = med[name]
            print(f"{name}: overhead over `run`: wall {100 * (m[0] - plain[0]) / plain[0]:+.0f}%, CPU of the tree "
                  f"{100 * (m[3] - plain[3]) / plain[3]:+.0f}%")
        if a.base:
            print("dedupe folders of both trees identical:", same_files(d / "dedupe", d / "base"))


if __name__ == "__main__":
    main()
