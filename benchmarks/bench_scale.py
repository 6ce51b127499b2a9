"""Memory and metadata as the record count grows (issue 31): peak RSS of the whole process tree of
``run``, ``run --dedupe exact``, ``run --packing bfd``, ``audit``, ``export``, ``plan`` and
``overlap`` at two sizes, as ratios.

The input: the shared corpus (``/work/shared/corpora/sft-mix.jsonl``, or ``--corpus``) copied N
times by ``bench_copies.build_input``: copy ``k`` appends `` [k]`` to every message's string
content (and to every tool call's arguments) and ``-c{k}`` to every id, so the dedupe pass is not
flattered. ``--duplicates half`` gives copies ``2j`` and ``2j+1`` the same text (ids still
differ), so half the records are exact duplicates.

    python benchmarks/bench_scale.py --copies 4,16            # the figures in RESULTS.md
    python benchmarks/bench_scale.py --copies 64,1024 --workers 2 --duplicates half
    python benchmarks/bench_scale.py --copies 25,100,400 --commands 'run,run --dedupe exact,audit,plan'

Each command runs as its own ``sftdata`` process; its tree's summed RSS is sampled every 20 ms
(``bench_prepare.TreeRssSampler``). Besides the ratios it prints each run's ``manifest.json`` size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_copies import build_input  # noqa: E402  (the input rule, shared with bench_prepare.py)
from bench_prepare import TreeRssSampler  # noqa: E402

CORPUS = Path("/work/shared/corpora/sft-mix.jsonl")


def measure(argv: list[str]) -> dict:
    """Seconds, exit code and peak summed RSS (bytes) of one ``sftdata`` command. It runs in a
    temporary folder: ``python -c`` puts its working folder first on ``sys.path``, so a checkout's
    own ``sftdata`` would shadow the one ``PYTHONPATH`` names."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scale-cwd-") as cwd:
        proc = subprocess.Popen([sys.executable, "-c", "from sftdata.cli import main; main()", *argv], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with TreeRssSampler(proc.pid, 0.02) as sampler:
            _, err = proc.communicate()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"sftdata {' '.join(argv)} exited {proc.returncode}: {err.decode()[-500:]}")
    return {"seconds": round(time.perf_counter() - started, 2), "rc": proc.returncode, "peak_rss": sampler.peak}


def one_size(work: Path, corpus: Path, copies: int, workers: int, half: bool, commands: tuple[str, ...],
             export_to: str) -> dict:
    """Every command of ``commands`` on ``copies`` copies; each folder is deleted once no later
    command reads it (a 1,024-copy folder is several GB)."""
    src = work / f"in-{copies}.jsonl"
    records = build_input(corpus, copies, src, half)
    out, dd, bfd, exp = (work / f"{k}-{copies}" for k in ("run", "dedupe", "bfd", "export"))
    base = ["-i", str(src), "--workers", str(workers), "--no-audit", "--overwrite"]
    res: dict = {"records": records, "input_bytes": src.stat().st_size, "manifest_bytes": {}}
    steps = {
        "run": (["run", "-o", str(out), *base], out),
        "run --dedupe exact": (["run", "-o", str(dd), *base, "--dedupe", "exact"], dd),
        "run --packing bfd": (["run", "-o", str(bfd), *base, "--packing", "bfd"], bfd),
        "audit": (["audit", str(out), "--workers", str(workers)], None),
        "export": (["export", str(out), "--to", export_to, "-o", str(exp), "--skip-audit"], None),
        "plan": (["plan", str(out)], None),
        "overlap": (["overlap", str(out), str(dd), "--limit", "0"], None),
    }
    for cmd in commands:
        argv, folder = steps[cmd]
        res[cmd] = measure(argv)
        if folder is not None:
            res["manifest_bytes"][cmd] = (folder / "manifest.json").stat().st_size
        if cmd == "run --packing bfd":
            shutil.rmtree(bfd)
        if cmd == "export":
            res["export_to"] = export_to
            shutil.rmtree(exp)
    src.unlink()
    for folder in (out, dd):
        shutil.rmtree(folder, ignore_errors=True)
    return res


COMMANDS = ("run", "run --dedupe exact", "run --packing bfd", "audit", "export", "plan", "overlap")


def report(figures: dict[int, dict], commands: tuple[str, ...]) -> None:
    """One line per command: peak RSS and seconds at each size, and each size's ratios to the first."""
    sizes = list(figures)
    print(f"{'command':<20} " + " ".join(f"{n:>6} copies       " for n in sizes) + "  RSS / time ratio to the first")
    for cmd in commands:
        first = figures[sizes[0]][cmd]
        cells = " ".join(f"{figures[n][cmd]['peak_rss'] / 2**20:7.0f} MiB {figures[n][cmd]['seconds']:6.1f}s" for n in sizes)
        ratios = " ".join(f"{figures[n][cmd]['peak_rss'] / first['peak_rss']:.2f}x/{figures[n][cmd]['seconds'] / first['seconds']:.2f}x"
                          for n in sizes[1:])
        print(f"{cmd:<20} {cells}   {ratios}")
    for n in sizes:
        print(f"{n} copies: {figures[n]['records']:,} records, {figures[n]['input_bytes']:,} B of input, manifest.json "
              + ", ".join(f"{k} {v:,} B" for k, v in figures[n]["manifest_bytes"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", default="4,16", help="copy counts, comma-separated, smallest first (ratios are to it)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duplicates", choices=("none", "half"), default="none")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--work", type=Path, help="keep the inputs and folders here (default: a temp folder)")
    ap.add_argument("--json", type=Path, help="write the figures here (after each size)")
    ap.add_argument("--commands", default=",".join(COMMANDS),
                    help="which commands, comma-separated (overlap needs both runs, the rest need `run`)")
    ap.add_argument("--export-to", default="hf", help="the export target measured (default hf)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.copies.split(",")]
    if not args.corpus.is_file():
        raise SystemExit(f"{args.corpus}: no corpus (pass --corpus)")
    commands = tuple(c for c in COMMANDS if c in args.commands.split(","))
    figures: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.work) as tmp:
        for n in sizes:
            figures[n] = one_size(Path(tmp), args.corpus, n, args.workers, args.duplicates == "half", commands,
                                  args.export_to)
            if args.json:
                args.json.write_text(json.dumps({"copies": sizes, "workers": args.workers, "duplicates": args.duplicates,
                                                 "cpus": os.cpu_count(), "figures": figures}, indent=2) + "\n")
    report(figures, commands)


if __name__ == "__main__":
    main()
