"""Two source trees side by side on the same inputs: `sftdata run` wall and CPU time, interleaved.

    python benchmarks/ab_trees.py OLD_TREE NEW_TREE [--sizes 50,16x,64x] [--repeats 5]

Each tree runs from its own source folder (``PYTHONPATH=TREE``) with the same interpreter, its
modules byte-compiled first. The inputs are the shared corpus's tool-free records: ``50`` is the
first 50 of them (the start-up row), ``16x`` 16 copies with ids suffixed per copy. The two
commands alternate (old, new, old, new, ...) so a busy machine slows both alike; the medians are
printed with every run's time, and the two outputs' shard folders are compared byte for byte.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPUS = Path("/work/shared/corpora/sft-mix.jsonl")
RUN = ["run", "--workers", "2", "--template", "llama3.2", "--no-audit", "--overwrite"]


def tool_free(corpus: Path) -> list[dict]:
    out = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if not rec.get("tools") and all(not m.get("tool_calls") and m.get("role") in ("system", "user", "assistant")
                                        for m in rec["messages"]):
            out.append(rec)
    return out


def make_input(records: list[dict], size: str, folder: Path) -> Path:
    path = folder / f"in-{size}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        if size.endswith("x"):
            for k in range(int(size[:-1])):
                for i, rec in enumerate(records):
                    f.write(json.dumps({**rec, "id": f"{rec.get('id', i)}~{k}"}, ensure_ascii=False) + "\n")
        else:
            for rec in records[:int(size)]:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def timed(tree: Path, args: list[str]) -> tuple[float, float]:
    """(wall, CPU seconds of the whole process tree) of ``python -m sftdata.cli ARGS`` from ``tree``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sftdata.cli", *args], cwd=tree, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(tree), "TOKENIZERS_PARALLELISM": "false"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def same_shards(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir() if p.suffix == ".arrow" or p.name in ("quarantine.jsonl",
                                                                                  "dataset_info.json"))
    other = sorted(p.name for p in b.iterdir() if p.suffix == ".arrow" or p.name in ("quarantine.jsonl",
                                                                                  "dataset_info.json"))
    return names == other and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def compile_tree(tree: Path) -> None:
    """Compile a tree's modules once, as an install would: with ``PYTHONDONTWRITEBYTECODE=1`` (the CI
    machine's) every process would compile them again, and a changed module more than others."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "sftdata"], cwd=tree, check=True,
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--sizes", default="50,16x,64x")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    trees = {"old": a.old.resolve(), "new": a.new.resolve()}
    for tree in trees.values():
        compile_tree(tree)
    records = tool_free(CORPUS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in a.sizes.split(","):
            src = make_input(records, size, work)
            times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
            for _ in range(a.repeats):
                for name, tree in trees.items():
                    times[name].append(timed(tree, [*RUN, "--input", str(src), "--output", str(work / f"{name}-{size}")]))
            same = same_shards(work / f"old-{size}", work / f"new-{size}")
            print(f"{size:>4} records/copies ({src.stat().st_size / 1e6:.1f} MB), {a.repeats} runs each, shards "
                  f"{'identical' if same else 'DIFFER'}")
            for name in trees:
                walls = [w for w, _ in times[name]]
                cpus = [c for _, c in times[name]]
                print(f"  {name}: wall median {statistics.median(walls):.3f} s "
                      f"[{', '.join(f'{w:.2f}' for w in walls)}]  cpu median {statistics.median(cpus):.3f} s")
            ratio = statistics.median(w for w, _ in times["new"]) / statistics.median(w for w, _ in times["old"])
            print(f"  new / old wall: {ratio:.2f}x")


if __name__ == "__main__":
    main()
