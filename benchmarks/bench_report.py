"""The report of ``bench_prepare.py``: ratios, targets, the printed tables and the JSON.

Why a module of its own: ``bench_prepare.py`` measures (it starts the contenders and collects a
``Measure`` each); this module only reads those measures, so the report can change without
touching how anything is timed. Every measure is looked up by the key ``bench_prepare`` stores it
under (``encode_batch``, ``limit``, ``limit_splintr``, ``run``, ...; see ``Results``).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Targets: (label, measured key, comparison, threshold).
TARGETS: list[tuple[str, str, str, float]] = [
    ("run >= 1.0x the limit (L) tokens/s", "run_vs_limit", ">=", 1.0),
    ("run >= 10x TRL prep tokens/s", "run_vs_trl", ">=", 10.0),
    ("run >= 2.5x encode_batch tokens/s", "run_vs_encode_batch", ">=", 2.5),
    ("memory growth at {scale}x input <= 1.25x", "memory_growth", "<=", 1.25),
    ("audit >= 10x faster than run", "run_vs_audit", ">=", 10.0),
    ("run 1 -> 2 workers >= 1.8x faster", "run_scaling", ">=", 1.8),
]
# The contenders whose token count must equal the run's: (key, label in the token check).
TOKEN_CHECKS = (("encode_batch", "encode_batch"), ("limit", "limit"), ("limit_splintr", "limit splintr"))


@dataclass
class Results:
    """Everything one benchmark measured. ``m``: the median measure of each contender, and the one-off
    measures (``stages``, ``run_one_record``, ``mem_1x``, ``mem_scaled``, ``audit_scaled``); a key
    holds None where that measure was not taken."""

    a: Any  # the parsed arguments
    argv: list[str]
    code: str
    source: str
    copies: int
    records: int
    corpus_bytes: int
    repeats: int
    base_copies: int
    rendering: Any
    timings: dict[str, list[Any]]
    m: dict[str, Any]
    startup_records: int
    measured: dict[str, float | None] = field(default_factory=dict)
    matches: dict[str, bool] = field(default_factory=dict)


def ratio(a: float, b: float) -> float | None:
    return a / b if a and b else None


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def fmt_rate(x: float | None) -> str:
    return "n/a" if x is None or x <= 0 else f"{x:,.0f} tokens/s"


def fmt_mb(n: int | None) -> str:
    return "n/a" if not n else f"{n / 2**20:,.0f} MiB"


def contender_rows(rows: list[tuple[str, Any]], run: Any) -> Iterator[str]:
    """One line per contender. ``run is``: how many times faster (c) is, in tokens/s of wall time;
    the same ratio per CPU second follows in brackets (steadier when other jobs share the cores)."""
    yield (f"{'contender':<42} {'records':>8} {'tokens':>11} {'wall s':>7} {'cpu s':>7} {'tokens/s':>9} "
           f"{'tok/cpu-s':>9}  run is")
    for label, m in rows:
        if m.error:
            yield f"{label:<42} error: {m.error}"
            continue
        vs = (f"{fmt_ratio(ratio(run.tokens_per_s, m.tokens_per_s))} "
              f"({fmt_ratio(ratio(run.tokens_per_cpu_s, m.tokens_per_cpu_s))} cpu)")
        yield (f"{label:<42} {m.records:>8,} {m.tokens:>11,} {m.seconds:>7.2f} {m.cpu_seconds:>7.2f} "
               f"{m.tokens_per_s:>9,.0f} {m.tokens_per_cpu_s:>9,.0f}  {vs}")


def stage_rows(m: Any) -> Iterator[str]:
    """The per-stage table: seconds and share of the stages' sum, and one real ``process_chunk``."""
    if m.error:
        yield f"per-stage profile: error: {m.error}"
        return
    st = m.extra["stages"]
    total = sum(st.values()) or 1.0
    yield (f"per-stage profile of one worker (CPU seconds; stages as separate passes over {m.records:,} records, "
           f"{m.tokens:,} tokens, one process):")
    for k, v in st.items():
        yield f"    {k:<14} {v:>7.3f} s {100 * v / total:>5.1f} %"
    yield (f"    {'sum':<14} {total:>7.3f} s; one process_chunk of the same chunk {m.seconds:.3f} cpu s "
           f"({m.tokens / m.seconds:,.0f} tokens per cpu s in one worker)")


def judge(measured: dict[str, float | None], scale: int) -> Iterator[tuple[str, str, str]]:
    for template, key, op, threshold in TARGETS:
        label = template.format(scale=scale)
        value = measured.get(key)
        if value is None:
            yield label, "n/a", "SKIP"
            continue
        if key == "run_scaling" and (measured.get("limit_scaling") or 0.0) < threshold:
            yield label, f"{value:.2f}x", f"SKIP ((L) itself scaled {measured.get('limit_scaling') or 0:.2f}x)"
            continue
        ok = value >= threshold if op == ">=" else value <= threshold
        yield label, f"{value:.2f}x", "PASS" if ok else "FAIL"


def summarize(r: Results) -> None:
    """The ratios the targets judge, and the token checks, into ``r.measured`` and ``r.matches``."""
    m = r.m
    run, audit, mem1, memn = m["run"], m["audit"], m["mem_1x"], m["mem_scaled"]
    r.measured = {
        "run_vs_limit": ratio(run.tokens_per_s, m["limit"].tokens_per_s),
        "run_vs_limit_splintr": ratio(run.tokens_per_s, m["limit_splintr"].tokens_per_s),
        "run_vs_trl": ratio(run.tokens_per_s, m["trl"].tokens_per_s),
        "run_vs_encode_batch": ratio(run.tokens_per_s, m["encode_batch"].tokens_per_s),
        "memory_growth": None if mem1.error or memn.error else ratio(memn.extra.get("peak_rss", 0),
                                                                     mem1.extra.get("peak_rss", 0)),
        "run_vs_audit": ratio(run.seconds, audit.seconds) if audit and not audit.error and not run.error else None,
        "run_scaling": None, "limit_scaling": None,
    }
    lim, lim1, run1 = m["limit"], m["limit_1"], m["run_1w"]
    if lim1 is not None and run1 is not None and not (lim1.error or run1.error or lim.error or run.error):
        r.measured["limit_scaling"] = ratio(lim1.seconds, lim.seconds)
        r.measured["run_scaling"] = ratio(run1.seconds, run.seconds)
    r.matches = {key: m[key].error is None and run.error is None and m[key].tokens == run.tokens
                 for key, _ in TOKEN_CHECKS}


def print_header(r: Results) -> None:
    cores = os.cpu_count() or 0
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print("sftdata prepare benchmark")
    print(f"command   : {' '.join(shlex.quote(x) for x in [Path(sys.executable).name, *r.argv])}")
    print(f"machine   : {cores} cores (usable {affinity}), {platform.machine()}, "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}")
    print(f"code      : {r.code}")
    print(f"corpus    : {r.source} x {r.copies} copies = {r.records:,} records ({r.corpus_bytes / 1e6:,.1f} MB)")
    print("copies    : " + ("identical text, ids suffixed -c<k> (--identical-copies)" if r.a.identical_copies else
                            "copy k appends ' [k]' to every message's content and tool-call arguments, ids -c<k> "
                            "(bench_copies.py); every contender reads this same file"))
    print()
    if r.repeats > 1:
        print(f"every contender ran {r.repeats} times, in rounds; each row is the median run (wall seconds: "
              + "; ".join(f"{k} " + ", ".join(f"{m.seconds:.2f}" for m in v) for k, v in r.timings.items() if v)
              + ")")


def print_contenders(r: Results) -> None:
    """The contenders' table and the notes under it."""
    m, w, measured = r.m, r.a.workers, r.measured
    trl, lim, lims, run = m["trl"], m["limit"], m["limit_splintr"], m["run"]
    for line in contender_rows([(f"(a) TRL SFTTrainer prep (num_proc={w})", trl),
                                ("(b) HF encode_batch (rendered, all cores)", m["encode_batch"]),
                                (f"(L) limit: tiktoken x {w} processes", lim),
                                (f"(LS) limit: splintr x {w} processes", lims),
                                (f"(c) sftdata run --workers {w}", run)], run):
        print(line)
    if not lim.error:
        print(f"    (L) timed over the encode calls only; slowest part {max(lim.extra['parts_s']):.2f} s "
              f"(parts: {', '.join(f'{x:.2f}' for x in lim.extra['parts_s'])} s)")
    print(f"    (b), (L) and (LS) encode the text rendered once with the official template ({r.rendering.records:,} "
          f"records, {r.rendering.seconds:.1f} s, not timed)")
    if not lims.error:
        print(f"    (LS) the same parts, cut at the control tokens beforehand ({lims.extra['encode_calls']:,} encode "
              f"calls); slowest part {max(lims.extra['parts_s']):.2f} s")
    if not (run.error or lim.error or lims.error):
        print(f"    run is {fmt_ratio(measured['run_vs_limit'])} L, run is {fmt_ratio(measured['run_vs_limit_splintr'])}"
              " LS (tokens/s; L judged, LS reported)")
    if measured["run_scaling"] is not None:
        print(f"    1 -> {w} workers: (c) {m['run_1w'].seconds:.2f} -> {run.seconds:.2f} s = "
              f"{fmt_ratio(measured['run_scaling'])} faster; the limit (L) {m['limit_1'].seconds:.2f} -> "
              f"{lim.seconds:.2f} s = {fmt_ratio(measured['limit_scaling'])} (the target applies only where (L) "
              "scales >= 1.8x)")
    startup, fixed = m["startup"], m["run_one_record"]
    if startup is not None and not startup.error:
        print(f"    start-up of (c): sftdata run on {r.startup_records} records (process start to exit, audit off): "
              f"{startup.seconds:.2f} s wall, {startup.cpu_seconds:.2f} cpu s")
    if fixed is not None and not fixed.error:
        print(f"    fixed cost of (c) (one record, same flags): {fixed.seconds:.2f} s wall, {fixed.cpu_seconds:.2f} "
              f"cpu s; (c) without it: {fmt_rate(ratio(run.tokens, run.seconds - fixed.seconds))}")
    if not trl.error:
        print(f"    (a) processed the {trl.records:,} of {r.records:,} records the Llama-3.0 training template "
              "can render (no tools); compare tokens/s")
    print()


def print_checks(r: Results) -> None:
    """Token checks, the audit and the memory lines."""
    m, run = r.m, r.m["run"]
    if m["encode_batch"].error or run.error:
        print("token check: n/a")
    else:
        for key, label in TOKEN_CHECKS:
            if not m[key].error:
                print(f"token check: {label} {m[key].tokens:,} vs sftdata run {run.tokens:,} -> "
                      f"{'OK' if r.matches[key] else 'MISMATCH'}")
        if not r.matches["encode_batch"]:
            print(f"    sftdata counts: {json.dumps(run.extra.get('counts', {}), sort_keys=True)}")
    audit, scale = m["audit"], r.a.memory_scale
    if audit is None:
        print("audit: not available" if run.error is None else "audit: n/a (the run failed)")
    elif audit.error:
        print(f"audit: error: {audit.error}")
    else:
        print(f"audit: sftdata audit {audit.seconds:.2f} s (cpu {audit.cpu_seconds:.2f} s, exit "
              f"{audit.extra['exit_code']}) vs sftdata run {run.seconds:.2f} s -> "
              f"{fmt_ratio(r.measured['run_vs_audit'])} faster "
              f"({fmt_ratio(ratio(run.cpu_seconds, audit.cpu_seconds))} in cpu s)")
    big, memn = m["audit_scaled"], m["mem_scaled"]
    if big is not None and not big.error:
        print(f"    at {scale}x input (info): audit {big.seconds:.2f} s vs run {memn.seconds:.2f} s -> "
              f"{fmt_ratio(ratio(memn.seconds, big.seconds))} faster")
    for label, mem in ((f"{r.base_copies}c", m["mem_1x"]), (f"{r.base_copies * scale}c", memn)):
        if mem.error:
            print(f"memory {label}: error: {mem.error}")
        else:
            print(f"memory {label:>3}: peak RSS of process tree {fmt_mb(mem.extra.get('peak_rss'))} "
                  f"({mem.tokens:,} tokens, {mem.seconds:.2f} s, {mem.tokens_per_s:,.0f} tokens/s, "
                  f"{mem.extra.get('rss_samples', 0)} samples)")
    print(f"memory growth {scale}x input ({r.base_copies} -> {r.base_copies * scale} copies): "
          f"{fmt_ratio(r.measured['memory_growth'])}")
    print()


def print_report(r: Results) -> None:
    print_header(r)
    print_contenders(r)
    print_checks(r)
    for line in stage_rows(r.m["stages"]):
        print(line)
    print()
    print(f"{'target':<40} {'measured':>9}  result")
    for label, value, verdict in judge(r.measured, r.a.memory_scale):
        print(f"{label:<40} {value:>9}  {verdict}")
    print(f"{'run vs the limit with splintr (LS)':<40} {fmt_ratio(r.measured['run_vs_limit_splintr']):>9}  "
          "reported, not judged")


def results_json(r: Results) -> str:
    scale = r.a.memory_scale
    names = {"mem_scaled": f"mem_{scale}x", "audit_scaled": f"audit_{scale}x", "limit_1": None, "run_1w": None}
    contenders = {names.get(k, k): {**asdict(m), "tokens_per_s": m.tokens_per_s, "tokens_per_cpu_s": m.tokens_per_cpu_s}
                  for k, m in r.m.items() if m is not None and names.get(k, k)}
    return json.dumps({
        "argv": r.argv, "code": r.code, "cores": os.cpu_count() or 0, "copies": r.copies, "records": r.records,
        "source": r.source, "contenders": contenders, "measured": r.measured,
        "tokens_match": r.matches["encode_batch"], "limit_tokens_match": r.matches["limit"],
        "limit_splintr_tokens_match": r.matches["limit_splintr"],
        "repeats": r.repeats, "timings": {k: [m.seconds for m in v] for k, v in r.timings.items()},
    }, indent=2)


def exit_code(r: Results) -> int:
    """1: a contender failed or a token count differs; 3 with ``--check``: a target failed; else 0."""
    keys = ("encode_batch", "limit", "limit_splintr", "run", "run_one_record", "mem_1x", "mem_scaled")
    failed = [k for k in (*keys, *(() if r.a.skip_trl else ("trl",))) if r.m[k] is not None and r.m[k].error]
    mismatch = [k for k, ok in r.matches.items() if not ok and not (r.m[k].error and k != "encode_batch")]
    if failed or mismatch:
        return 1
    if r.a.check and any(v == "FAIL" for _, _, v in judge(r.measured, r.a.memory_scale)):
        return 3
    return 0
