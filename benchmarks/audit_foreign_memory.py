"""Peak memory of ``sftdata audit`` on one large foreign file (issue 28): an Arrow IPC file and a
Parquet file of about ``--gb`` GB each, generated in a temporary folder and deleted afterwards.

Rows are our own llama3.2 rendering of generated records (so every rule runs and passes), with
``input_ids`` and ``labels`` stored as int64 lists, as TRL and ``datasets`` write them, repeated
until the file reaches the size. Each audit runs in a child process; its peak resident set size
(``ru_maxrss`` of the child, which counts the touched pages of memory-mapped files too) is
reported with its wall time and exit code. Target: under 500 MB for 1.5 GB files.

    python benchmarks/audit_foreign_memory.py --gb 1.5
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 500


def _rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, lengths) of our rendering of 64 generated records."""
    sys.path.insert(0, str(ROOT))
    from sftdata.process.rerender import render_source_rows
    from tests.synth import generate_records, write_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "r.jsonl"
        write_jsonl(src, generate_records(64, seed=28, tools=False))
        rendered = list(render_source_rows([str(src)], {"pipeline": {"template": "llama3.2"}}))
    ids = np.concatenate([r[1] for r in rendered]).astype(np.int64)
    labels = np.concatenate([r[2] for r in rendered]).astype(np.int64)
    return ids, labels, np.asarray([len(r[1]) for r in rendered], np.int64)


def _batch(ids: np.ndarray, labels: np.ndarray, lens: np.ndarray, copies: int) -> pa.RecordBatch:
    offs = np.zeros(len(lens) * copies + 1, np.int64)
    np.cumsum(np.tile(lens, copies), out=offs[1:])

    def as_list(values: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offs.astype(np.int32)), pa.array(values))

    return pa.record_batch({"input_ids": as_list(np.tile(ids, copies)), "labels": as_list(np.tile(labels, copies))})


def generate(folder: Path, gb: float, one_batch: bool) -> tuple[Path, Path]:
    ids, labels, lens = _rows()
    batch = _batch(ids, labels, lens, 64)  # about 2 MB per batch
    n = max(1, int(gb * 1e9 / batch.nbytes))
    arrow, parquet = folder / "big.arrow", folder / "big.parquet"
    if one_batch:  # the whole file one record batch (large lists: over 2**31 values)
        big = pa.Table.from_batches([batch] * n)
        big = big.cast(pa.schema([(c, pa.large_list(pa.int64())) for c in big.schema.names])).combine_chunks()
        with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_file(sink, big.schema) as writer:
            writer.write_batch(big.to_batches()[0])
        del big
    else:
        with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            for _ in range(n):
                writer.write_batch(batch)
    # random-looking ids do not compress, so the Parquet file is written without compression to
    # reach the same size from the same rows; row groups of 64 Ki rows, as many writers use
    with pq.ParquetWriter(str(parquet), batch.schema, compression="none", use_dictionary=False) as writer:
        group = pa.Table.from_batches([batch] * max(1, 65536 // batch.num_rows))
        while parquet.stat().st_size < gb * 1e9:
            writer.write_table(group, row_group_size=65536)
    return arrow, parquet


# a wrapper process per audit, so that RUSAGE_CHILDREN holds that one audit's peak alone
_WRAPPER = """
import resource, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "sftdata.cli", "audit", sys.argv[1]], capture_output=True, text=True)
tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, tail[0] if tail else "")
"""


def measure(path: Path) -> dict:
    """Wall seconds, exit code and peak RSS (ru_maxrss) of one ``sftdata audit`` of ``path``."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _WRAPPER, str(path)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout.strip()
    code, peak_kb, last = out.split(" ", 2)
    return {"file": path.name, "bytes": path.stat().st_size, "exit": int(code),
            "seconds": time.perf_counter() - started, "peak_rss_mb": int(peak_kb) / 1024, "last_line": last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.5, help="size of each generated file (default 1.5)")
    parser.add_argument("--only", choices=["arrow", "parquet"], help="measure one of the two files")
    parser.add_argument("--one-batch", action="store_true", help="write the Arrow file as one record batch")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sftdata-audit-memory-"))
    try:
        arrow, parquet = generate(folder, args.gb, args.one_batch)
        for path in (arrow, parquet):
            if args.only and path.suffix != f".{args.only}":
                continue
            r = measure(path)
            verdict = "ok" if r["peak_rss_mb"] < TARGET_MB else "OVER"
            print(f"{r['file']}: {r['bytes'] / 1e9:.2f} GB, exit {r['exit']}, {r['seconds']:.1f} s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB (target < {TARGET_MB} MB: {verdict}); {r['last_line']}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
