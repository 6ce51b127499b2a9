"""`sftdata run --executor ray` on a two-node Ray cluster started on this machine (issue 31): the
local executor's bytes, and the driver's memory at two input sizes.

For each size N (copies of the shared corpus, made by ``bench_copies.build_input``: copy k appends
`` [k]`` to every message) it runs ``sftdata run`` with the local executor and then with
``--executor ray --ray-address`` on a cluster of two nodes, a head and a second node, each
started here with ``ray start --block --num-cpus 1``, with its own ports and a small
object store. The nodes listen on the machine's network address, as on a real cluster (Ray's
single-node switch, which keeps a local instance on loopback, makes ``ray start --address``
refuse to join). Then it

- compares the two output folders file by file, byte for byte (every file, dot-files included:
  the Ray executor's output is documented as identical to the local one; ``--no-audit``, so no
  ``audit.json`` that names its folder);
- reports the peak RSS of the driver process alone and of its whole process tree (sampled every
  20 ms), for both executors, and their growth from the smallest to the largest size;
- shows that both nodes ran the run's tasks: the worker processes under each node's ``ray start``
  whose title was ``ray::run_task`` while sampled, and their CPU seconds. A node with none fails
  the check.

The cluster is stopped at the end, also on failure or Ctrl-C, by signalling the two ``ray start``
processes this script started (SIGTERM: each stops what it started), then their process groups;
``ray stop`` is never used, as it would stop every Ray instance on the machine.

    python benchmarks/ray_two_node.py --copies 16,64          # while developing
    python benchmarks/ray_two_node.py --copies 64,256         # the issue's figure

Exit 0: every size identical and both nodes ran tasks; 1: a difference, a failed run or an idle
node; 2: wrong arguments or no corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_copies import build_input  # noqa: E402
from ray_cluster import SINGLE_NODE_ENV, TASK_TITLE, Node, start_cluster, tasks_by_node  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path("/work/shared/corpora/sft-mix.jsonl")


class Sampler:
    """Every 20 ms: the driver's RSS, its tree's summed RSS, each node tree's summed RSS, and each
    node's worker processes seen running ``run_task`` (with their CPU seconds when last seen)."""

    def __init__(self, driver_pid: int, nodes: list[Node]) -> None:
        import psutil

        self.psutil = psutil
        self.driver = psutil.Process(driver_pid)
        self.nodes = {n.name: psutil.Process(n.proc.pid) for n in nodes}
        self.driver_peak = self.tree_peak = 0
        self.node_peak = dict.fromkeys(self.nodes, 0)
        self.task_workers: dict[str, dict[int, float]] = {name: {} for name in self.nodes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree(self, proc: Any) -> list[Any]:
        try:
            return [proc, *proc.children(recursive=True)]
        except self.psutil.Error:
            return []

    def _rss(self, procs: list[Any]) -> int:
        total = 0
        for p in procs:
            with suppress(self.psutil.Error):
                total += p.memory_info().rss
        return total

    def _sample(self) -> None:
        with suppress(self.psutil.Error):
            self.driver_peak = max(self.driver_peak, self.driver.memory_info().rss)
        self.tree_peak = max(self.tree_peak, self._rss(self._tree(self.driver)))
        for name, root in self.nodes.items():
            procs = self._tree(root)
            self.node_peak[name] = max(self.node_peak[name], self._rss(procs))
            for p in procs:
                with suppress(self.psutil.Error):
                    if TASK_TITLE in " ".join(p.cmdline()):
                        cpu = p.cpu_times()
                        self.task_workers[name][p.pid] = cpu.user + cpu.system

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_sftdata(argv: list[str], env: dict[str, str], cwd: Path, nodes: list[Node]) -> dict[str, Any]:
    """One ``sftdata`` command, sampled; its figures. ``python -c`` in a neutral folder: the working
    folder comes first on ``sys.path``, and ``PYTHONPATH`` must choose the package."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "from sftdata.cli import main; main()", *argv], cwd=cwd,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with Sampler(proc.pid, nodes) as s:
            _, err = proc.communicate()
    finally:  # interrupted: the command goes too, before the cluster is stopped
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    out = {"seconds": round(time.perf_counter() - t0, 2), "rc": proc.returncode, "driver_peak_rss": s.driver_peak,
           "tree_peak_rss": s.tree_peak, "node_peak_rss": s.node_peak,
           "task_workers": {n: {"processes": len(w), "cpu_s": round(sum(w.values()), 2)}
                            for n, w in s.task_workers.items()}}
    if proc.returncode != 0:
        out["error"] = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    return out


def differences(a: Path, b: Path) -> list[str]:
    """Every file of two output folders, byte for byte; what differs, by name."""
    def files(root: Path) -> dict[str, Path]:
        return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}

    fa, fb = files(a), files(b)
    bad = [f"only in {'local' if n in fa else 'ray'}: {n}" for n in sorted(set(fa) ^ set(fb))]
    bad += [f"differs: {n}" for n in sorted(set(fa) & set(fb)) if fa[n].read_bytes() != fb[n].read_bytes()]
    if not fa:
        bad.append("no files")
    return bad


def one_size(work: Path, corpus: Path, copies: int, a: argparse.Namespace, address: str, nodes: list[Node],
             env: dict[str, str]) -> dict[str, Any]:
    """Both executors on ``copies`` copies; the folders compared, then deleted."""
    src = work / f"in-{copies}.jsonl"
    res: dict[str, Any] = {"copies": copies, "records": build_input(corpus, copies, src)}
    res["input_bytes"] = src.stat().st_size
    common = ["run", "-i", str(src), "--workers", str(a.workers), "--no-audit", "--overwrite",
              *(["--chunk-size", a.chunk_size] if a.chunk_size else [])]
    outs = {ex: work / f"{ex}-{copies}" for ex in ("local", "ray")}
    res["local"] = run_sftdata([*common, "-o", str(outs["local"])], env, work, nodes)
    res["ray"] = run_sftdata([*common, "-o", str(outs["ray"]), "--executor", "ray", "--ray-address", address],
                             env, work, nodes)
    res["ray"]["tasks_by_node"] = tasks_by_node(address, env, work, nodes)
    ok = "error" not in res["local"] and "error" not in res["ray"]
    res["differences"] = differences(outs["local"], outs["ray"]) if ok else ["a run failed"]
    if ok:
        res["files"] = sum(1 for p in outs["local"].rglob("*") if p.is_file())
        manifest = json.loads((outs["local"] / "manifest.json").read_bytes())
        res["tokens"], res["chunks"] = manifest["totals"]["tokens"], manifest["chunks"]
    src.unlink()
    if not a.keep:
        for folder in outs.values():
            shutil.rmtree(folder, ignore_errors=True)
    return res


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def evidence(m: dict[str, Any]) -> bool:
    """Print which nodes ran the run's tasks; True when both did. The GCS's task events decide; the
    process titles sampled during the run are printed beside them (and decide when the GCS could
    not be read: a task of a few milliseconds can fall between two samples)."""
    titles = m["task_workers"]
    print("       tasks by node (GCS task events): " + (
        "; ".join(f"{n}: {c} task attempt(s)" for n, c in sorted(m["tasks_by_node"].items()))
        if isinstance(m["tasks_by_node"], dict) else m["tasks_by_node"]))
    print("       worker processes seen titled ray::run_task: " + "; ".join(
        f"{n}: {w['processes']} ({w['cpu_s']:.1f} cpu s)" for n, w in titles.items()))
    if isinstance(m["tasks_by_node"], dict):
        idle = [n for n in titles if not m["tasks_by_node"].get(n)]
    else:
        idle = [n for n, w in titles.items() if not w["processes"]]
    print(f"       -> IDLE: {', '.join(idle)}" if idle else "       -> both nodes ran tasks")
    return not idle


def report(sizes: list[dict[str, Any]]) -> bool:
    """The table, the evidence and the growth; True when every check passed."""
    print(f"{'copies':>6} {'records':>10} {'tokens':>12} {'executor':<8} {'wall s':>7} {'driver RSS':>11} "
          f"{'driver tree':>11} {'nodes RSS':>10}  output")
    ok = True
    for r in sizes:
        same = "identical" if not r["differences"] else f"DIFFERS ({len(r['differences'])})"
        for ex in ("local", "ray"):
            m = r[ex]
            nodes_rss = mib(sum(m["node_peak_rss"].values())) if ex == "ray" else ""
            print(f"{r['copies']:>6} {r['records']:>10,} {r.get('tokens', 0):>12,} {ex:<8} {m['seconds']:>7.1f} "
                  f"{mib(m['driver_peak_rss']):>11} {mib(m['tree_peak_rss']):>11} {nodes_rss:>10}  "
                  f"{m['error'][0] if 'error' in m else same if ex == 'ray' else str(r.get('files', '?')) + ' files'}")
        for line in r["differences"][:10]:
            print(f"       {line}")
        ok &= not r["differences"]
        ok &= evidence(r["ray"])
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for ex in ("local", "ray"):
            d = hi[ex]["driver_peak_rss"] / max(1, lo[ex]["driver_peak_rss"])
            t = hi[ex]["tree_peak_rss"] / max(1, lo[ex]["tree_peak_rss"])
            print(f"growth {lo['copies']} -> {hi['copies']} copies, {ex}: driver RSS {d:.2f}x, driver tree {t:.2f}x")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", default="16,64", help="copy counts, comma-separated, smallest first")
    ap.add_argument("--workers", type=int, default=2, help="--workers of both runs (the cluster has 2 CPUs)")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--object-store-mb", type=int, default=100, help="object store of each node, MiB")
    ap.add_argument("--chunk-size", help="--chunk-size of both runs (default: sftdata's auto)")
    ap.add_argument("--work", type=Path, help="folder for inputs, outputs and logs (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the output folders (in --work)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    try:
        copies = [int(x) for x in a.copies.split(",")]
    except ValueError:
        print(f"--copies {a.copies!r}: expected numbers, e.g. 16,64", file=sys.stderr)
        return 2
    if not a.corpus.is_file():
        print(f"{a.corpus}: no corpus (pass --corpus)", file=sys.stderr)
        return 2
    env = {**{k: v for k, v in os.environ.items() if k != SINGLE_NODE_ENV}, "RAY_USAGE_STATS_ENABLED": "0",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT)}
    sizes: list[dict[str, Any]] = []
    with ExitStack() as stack:
        work = a.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ray-two-node-")))
        work.mkdir(parents=True, exist_ok=True)
        print(f"... starting a head and a second node (1 CPU, {a.object_store_mb} MiB object store each)",
              file=sys.stderr, flush=True)
        try:
            cluster = start_cluster(work, a.object_store_mb << 20, env, stack)
        except RuntimeError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        address, nodes = cluster["address"], cluster.pop("nodes")
        for n in copies:
            print(f"... {n} copies: local, then ray at {address}", file=sys.stderr, flush=True)
            sizes.append(one_size(work, a.corpus, n, a, address, nodes, env))
    print(f"sftdata run, local executor vs Ray on two nodes of this machine (--workers {a.workers}); "
          f"input: {a.corpus} x copies, copy k tagged ' [k]' (bench_copies.py)")
    ok = report(sizes)
    if a.json:
        a.json.write_text(json.dumps({"workers": a.workers, "cluster": cluster, "ok": ok, "sizes": sizes},
                                     indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds the ExitStack: the nodes are stopped
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
