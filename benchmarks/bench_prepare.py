"""Benchmark `sftdata run` against what people use today, on the same records, in one run.

Why this script exists: the project claims that `sftdata run` is much faster than preparing the same
data with TRL's ``SFTTrainer`` (assistant-only loss), at least as fast as the bare Rust tokenizer
on pre-rendered text, that its memory does not grow with the input, and that the audit is cheap next
to the run. Each claim is a target below; this script measures all of them in one process so the
numbers are comparable on a noisy machine (never compare numbers across runs of this script).

Contenders, all over the same corpus file:

(a) TRL ``SFTTrainer._prepare_dataset`` with ``assistant_only_loss=True``, the Llama-3 training
    template (``{% generation %}`` tags) and ``dataset_num_proc=2``. That template cannot render
    tools, so records with tools / tool calls / tool messages are left out of (a): compare tokens/s,
    not seconds. Building the trainer and the ``Dataset`` is setup, not timed (this favours TRL).
(b) ``tokenizers.Tokenizer.encode_batch`` on text already rendered with the official Llama-3.2
    template (rendering is not timed), blocks of 1000, Rust thread pool on every core.
(c) ``sftdata run --workers N --no-audit`` as a subprocess: end to end, process start, shards,
    manifest and all.
(L) and (LS), the limits (``bench_limits.py``): the rendered text in one part per worker, each
    part's encode calls alone timed in a forked process: (L) with tiktoken, (LS) with splintr built
    and called as a run does. The run is judged against (L); its ratio to (LS) is reported.

The input is the corpus copied ``--copies`` times with every copy's text changed
(``bench_copies.py``: copy k appends `` [k]`` to every message and tool-call arguments), so
repeated copies do not flatter what caches what it has seen; all contenders read the same file.

(a) and (b) run in fresh child processes of this script (``--contender``): each pays its own imports
outside the timed region, gets a cold tokenizer cache, and (b) can turn on the tokenizers thread
pool without a fork-after-threads hazard. Besides wall time every contender reports CPU seconds
(user + sys of the whole process tree), which is steadier than wall time on a shared machine.

    python benchmarks/bench_prepare.py --copies 4
    python benchmarks/bench_prepare.py --quick        # under a minute; what the test runs
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.synth: the generated corpus the tests use too
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_copies import write_copies  # noqa: E402  (the per-copy text change, shared with bench_scale.py)
from bench_report import Results, exit_code, print_report, results_json, summarize  # noqa: E402

# The shared corpus sits beside the checkout (/work/shared next to /work/main), as in tests/conftest.py.
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "sft-mix.jsonl"
DATE_STRING = "26 Jul 2024"
RESULT_TAG = "BENCH_RESULT "
QUICK_RECORDS = 100
SYNTH_RECORDS = 3000
ENCODE_BLOCK = 1000
STARTUP_RECORDS = 50
SAMPLE_EVERY_S = 0.02


@dataclass
class Measure:
    """One timed contender: what it processed and how long it took."""

    name: str
    records: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 and not self.error else 0.0

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_seconds if self.cpu_seconds > 0 and not self.error else 0.0


# -- corpus ------------------------------------------------------------------------------------
def iter_records(path: Path) -> Iterator[dict]:
    """JSON objects of a JSONL file, one at a time; blank and unparsable lines are skipped (none of
    the contenders can use them, and the pipeline's quarantine is not what is being measured)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                rec.setdefault("id", f"{path.name}:{n}")
                yield rec


def read_records(path: Path, limit: int | None = None) -> list[dict]:
    """The first ``limit`` (else all) records of ``iter_records``."""
    out: list[dict] = []
    for rec in iter_records(path):
        out.append(rec)
        if limit is not None and len(out) >= limit:
            break
    return out


def base_records(corpus: Path | None, quick: bool, tmp: Path, tool_free: bool = False) -> tuple[list[dict], str]:
    """The records one copy is made of, and a description of where they came from."""
    limit = QUICK_RECORDS if quick else None
    if corpus is None and DEFAULT_CORPUS.is_file():
        corpus = DEFAULT_CORPUS
    if corpus is not None:
        recs = read_records(corpus, None if tool_free else limit)
        if tool_free:  # what the limit was first measured on: records (a) can render too
            recs = [r for r in recs if renderable_by_llama3_training(r) is not None][:limit]
        return recs, f"{corpus}" + (" (tool-free records)" if tool_free else "") + (
            f" (first {len(recs)} records)" if quick else "")
    from tests.synth import generate_records, write_jsonl

    n = limit or SYNTH_RECORDS
    path = tmp / "synth.jsonl"
    write_jsonl(path, generate_records(n, 1))
    return read_records(path), f"tests.synth {n} records, seed 1"


# -- process-tree accounting ----------------------------------------------------------------------
def children_cpu() -> float:
    """CPU seconds of reaped descendants (a subprocess and every worker it waited for)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_and_children_cpu() -> float:
    """CPU seconds of this process (all threads) plus its reaped descendants."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime + children_cpu()


class TreeRssSampler:
    """Peak of the summed RSS of a process and all its descendants, sampled on a thread.

    Summed RSS counts pages shared between a forked parent and its workers once per process, so it
    overstates the physical footprint; it is the number a container's limit is closest to in the
    worst case, and what the memory target is defined on.
    """

    def __init__(self, pid: int, every_s: float = SAMPLE_EVERY_S) -> None:
        import psutil

        self._psutil = psutil
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> int:
        total = 0
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except self._psutil.Error:
            return 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except self._psutil.Error:  # exited between listing and reading
                continue
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self.samples += 1
            self._stop.wait(self.every_s)

    def __enter__(self) -> TreeRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- contender (c): sftdata run, and the audit ----------------------------------------------------
def sftdata_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sftdata.cli", *args]


def run_sftdata(corpus: Path, out: Path, workers: int, sample_memory: bool = False) -> Measure:
    """``sftdata run`` end to end as a subprocess; tokens and records come from its manifest."""
    cmd = sftdata_cmd("run", "--input", str(corpus), "--output", str(out), "--workers", str(workers),
                      "--template", "llama3.2", "--date-string", DATE_STRING, "--no-audit", "--overwrite")
    m = Measure(f"sftdata run --workers {workers}")
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if sample_memory:
            with TreeRssSampler(proc.pid) as sampler:
                proc.wait()
            m.extra["peak_rss"] = sampler.peak
            m.extra["rss_samples"] = sampler.samples
        else:
            proc.wait()
    m.seconds = time.perf_counter() - t0
    m.cpu_seconds = children_cpu() - cpu0
    if proc.returncode != 0:
        m.error = f"exit {proc.returncode}: {tail(out.parent / f'{out.name}.log')}"
        return m
    manifest = json.loads((out / "manifest.json").read_text())
    m.tokens = manifest["totals"]["tokens"]
    m.records = manifest["totals"]["rows"]
    m.extra["counts"] = manifest.get("counts", {})
    return m


def audit_available() -> bool:
    """`sftdata audit` is written by another issue; the benchmark must run before it lands."""
    res = subprocess.run(sftdata_cmd("audit", "--help"), capture_output=True, cwd=ROOT)
    return res.returncode == 0


def run_audit(folder: Path) -> Measure:
    m = Measure("sftdata audit")
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    res = subprocess.run(sftdata_cmd("audit", str(folder)), capture_output=True, cwd=ROOT)
    m.seconds = time.perf_counter() - t0
    m.cpu_seconds = children_cpu() - cpu0
    m.extra["exit_code"] = res.returncode
    if res.returncode not in (0, 1):  # 1 = a rule failed: the audit still ran to the end
        m.error = f"exit {res.returncode}: {res.stderr.decode(errors='replace')[-400:]}"
    return m


def median_measure(measures: list[Measure]) -> Measure | None:
    """The measure with the median wall time (the upper one of an even count); an error wins."""
    if not measures:
        return None
    failed = [m for m in measures if m.error]
    return failed[0] if failed else sorted(measures, key=lambda m: m.seconds)[len(measures) // 2]


def tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


# -- contenders (a) and (b), each run in a child process --------------------------------------------
def renderable_by_llama3_training(rec: dict) -> dict | None:
    """The record as TRL's Llama-3 training template can take it, or None.

    ``llama3_training.jinja`` has no tool support: records with ``tools``, ``tool_calls`` or
    tool/ipython messages would be rendered wrongly, so they are left out of contender (a).
    Messages keep only role and content, as TRL's conversational format expects.
    """
    if rec.get("tools"):
        return None
    msgs = []
    for m in rec.get("messages") or []:
        if not isinstance(m, dict) or m.get("tool_calls") or m.get("role") not in ("system", "user", "assistant"):
            return None
        if not isinstance(m.get("content"), str):
            return None
        msgs.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in msgs):
        return None
    return {"messages": msgs}


def contender_trl(corpus: Path, workers: int) -> Measure:
    """(a): TRL's own dataset preparation for assistant-only loss, timed on its own."""
    import logging
    from importlib import resources

    import datasets
    import pyarrow.compute as pc
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from sftdata.tokenizer import load_tokenizer

    datasets.disable_caching()  # a cache hit would time a file read, not the preparation
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)

    records = [r for r in map(renderable_by_llama3_training, read_records(corpus)) if r is not None]
    tok = load_tokenizer().hf  # the built-in tokenizer's transformers object
    tok.chat_template = resources.files("trl").joinpath("chat_templates", "llama3_training.jinja").read_text()
    dataset = datasets.Dataset.from_list(records)
    # A one-layer Llama with the real vocabulary: the trainer needs a model, not a download.
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128256, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as outdir:
        args = SFTConfig(output_dir=outdir, assistant_only_loss=True, dataset_num_proc=workers,
                         max_length=8192, report_to="none", use_cpu=True,
                         dataset_kwargs={"skip_prepare_dataset": True})
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)
        cpu0 = self_and_children_cpu()
        t0 = time.perf_counter()
        prepared = trainer._prepare_dataset(dataset, tok, args, False, None, "train")
        seconds = time.perf_counter() - t0
        cpu = self_and_children_cpu() - cpu0
    tokens = pc.sum(pc.list_value_length(prepared.data.column("input_ids"))).as_py() or 0
    head = prepared.select(range(min(50, len(prepared))))["labels"]
    trained = sum(sum(x != -100 for x in row) for row in head)
    return Measure("TRL SFTTrainer prep", len(prepared), int(tokens), seconds, cpu,
                   extra={"input_records": len(records), "trained_in_first_50_rows": trained})


def template_messages(messages: list[dict]) -> list[dict]:
    """OpenAI-style tool calls carry ``arguments`` as a JSON string; the Llama-3 template expects an
    object (it would print the string quoted). Decode them, as anyone feeding the template must."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if calls:
            calls = [{**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
                     if isinstance(c.get("function", {}).get("arguments"), str) else c for c in calls]
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


def rendered_texts(corpus: Path, rendered: Path | None = None) -> list[str]:
    """The corpus rendered with the official ``llama3_2.jinja`` (what (b), (L) and (LS) encode);
    read from ``rendered`` when a ``render`` contender wrote it there (the rendering is not timed,
    and one rendering for all contenders and rounds saves minutes at 64 copies)."""
    from importlib import resources

    from sftdata.tokenizer import load_tokenizer

    if rendered is not None and rendered.is_file():
        with open(rendered, "rb") as f:
            return pickle.load(f)
    hf = load_tokenizer().hf
    template = resources.files("trl").joinpath("chat_templates", "llama3_2.jinja").read_text()
    return [hf.apply_chat_template(template_messages(r["messages"]), tools=r.get("tools"), chat_template=template,
                                   tokenize=False, date_string=DATE_STRING)
            for r in iter_records(corpus)]


def contender_render(corpus: Path, rendered: Path) -> Measure:
    """Render the corpus once into ``rendered`` (a pickled list of str) for the contenders."""
    t0 = time.perf_counter()
    texts = rendered_texts(corpus)
    with open(rendered, "wb") as f:
        pickle.dump(texts, f, protocol=pickle.HIGHEST_PROTOCOL)
    return Measure("render", len(texts), 0, time.perf_counter() - t0)


def contender_limit(corpus: Path, workers: int, rendered: Path | None = None) -> Measure:
    """(L): single-threaded tiktoken over the same ranks, one process per worker, on the rendered text."""
    from bench_limits import run_limit

    texts = rendered_texts(corpus, rendered)
    r = run_limit(texts, workers)
    return Measure("limit", len(texts), r["tokens"], r["seconds"], r["cpu_seconds"], extra={"parts_s": r["parts"]})


def contender_limit_splintr(corpus: Path, workers: int, rendered: Path | None = None) -> Measure:
    """(LS): (L) with splintr, built and called as a run builds and calls it, on the same text."""
    from bench_limits import run_limit_splintr

    texts = rendered_texts(corpus, rendered)
    r = run_limit_splintr(texts, workers)
    return Measure("limit splintr", len(texts), r["tokens"], r["seconds"], r["cpu_seconds"],
                   extra={"parts_s": r["parts"], "encode_calls": r["calls"]})


def contender_stages(corpus: Path) -> Measure:
    """Per-stage seconds of one worker (``bench_limits.stage_profile``), in this process."""
    from bench_limits import stage_profile

    r = stage_profile(corpus, "llama3.2", DATE_STRING)
    return Measure("stages", r["records"], r["tokens"], r["process_chunk"], sum(r["stages"].values()), extra=r)


def contender_encode_batch(corpus: Path, rendered: Path | None = None) -> Measure:
    """(b): the Rust tokenizer alone on pre-rendered text: the ceiling of "just tokenize it"."""
    from sftdata.tokenizer import load_tokenizer

    texts = rendered_texts(corpus, rendered)
    backend = load_tokenizer().hf.backend_tokenizer
    cpu0 = self_and_children_cpu()
    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), ENCODE_BLOCK):
        # The text holds the control tokens as text; they match as added tokens. No BOS added:
        # the template already wrote it.
        tokens += sum(len(e.ids) for e in backend.encode_batch(texts[i:i + ENCODE_BLOCK], add_special_tokens=False))
    seconds = time.perf_counter() - t0
    return Measure("HF encode_batch", len(texts), tokens, seconds, self_and_children_cpu() - cpu0,
                   extra={"threads": os.environ.get("RAYON_NUM_THREADS", "all cores")})


def run_contender(kind: str, corpus: Path, workers: int, log: Path, rendered: Path | None = None) -> Measure:
    """Run contender ``kind`` in a fresh interpreter and read its result line."""
    env = dict(os.environ)
    if kind == "encode_batch":
        env["TOKENIZERS_PARALLELISM"] = "true"  # the backend's Rust thread pool, every core
    cmd = [sys.executable, str(Path(__file__).resolve()), "--contender", kind, "--corpus", str(corpus),
           "--workers", str(workers), *(["--rendered", str(rendered)] if rendered else [])]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with open(log, "wb") as errf:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=errf, env=env, cwd=ROOT)
    for line in res.stdout.decode(errors="replace").splitlines():
        if line.startswith(RESULT_TAG):
            return Measure(**json.loads(line[len(RESULT_TAG):]))
    return Measure(kind, error=f"exit {res.returncode}: {tail(log)}")


def step(msg: str) -> Callable[[], None]:
    """Progress on stderr, so stdout stays the report."""
    t0 = time.perf_counter()
    print(f"... {msg}", file=sys.stderr, flush=True)
    return lambda: print(f"    done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def _timed(store: dict[str, list[Measure]], tag: str, key: str, msg: str, fn: Callable[[], Measure]) -> None:
    done = step(msg + tag)
    store[key].append(fn())
    done()


ROUND_KEYS = ("trl", "encode_batch", "limit", "limit_splintr", "limit_1", "run_1w", "startup", "run", "audit")


def measure_rounds(a: argparse.Namespace, corpus: Path, tmp: Path, rendered: Path, repeats: int
                   ) -> dict[str, list[Measure]]:
    """Every contender ``repeats`` times, in rounds (a, b, L, LS, c, audit), so the medians compare:
    on a shared 2-core machine one timing of a few seconds is not a measure, and rounds spread any
    drift in the machine's load over all contenders alike."""
    t: dict[str, list[Measure]] = {k: [] for k in ROUND_KEYS}
    has_audit = audit_available()
    w = a.workers
    for i in range(repeats):
        timed = partial(_timed, t, f" [round {i + 1}/{repeats}]" if repeats > 1 else "")
        if not a.skip_trl:
            timed("trl", "(a) TRL SFTTrainer dataset preparation", lambda: run_contender("trl", corpus, w, tmp / "trl.log"))
        timed("encode_batch", "(b) HF tokenizers encode_batch",
              lambda: run_contender("encode_batch", corpus, w, tmp / "encode_batch.log", rendered))
        timed("limit", "(L) the limit: tiktoken, one process per worker",
              lambda: run_contender("limit", corpus, w, tmp / "limit.log", rendered))
        timed("limit_splintr", "(LS) the limit with splintr (run's engine), one process per worker",
              lambda: run_contender("limit_splintr", corpus, w, tmp / "limit_splintr.log", rendered))
        if a.scaling:
            timed("limit_1", "(L1) the limit with 1 process", lambda: run_contender("limit", corpus, 1,
                                                                                 tmp / "limit1.log", rendered))
            timed("run_1w", "(c1) sftdata run --workers 1", lambda: run_sftdata(corpus, tmp / "out-1w", 1))
        timed("startup", f"start-up: sftdata run on {STARTUP_RECORDS} records",
              lambda: run_sftdata(tmp / "startup.jsonl", tmp / "out-startup", w))
        # --quick times the sampled 1x memory run as (c): one run fewer, and its numbers are only a
        # smoke test anyway. A real benchmark keeps the timed run free of the sampler thread.
        timed("run", f"(c) sftdata run --workers {w}",
              lambda: run_sftdata(corpus, tmp / "out-1x", w, sample_memory=a.quick))
        if has_audit and t["run"][-1].error is None:
            timed("audit", "sftdata audit", lambda: run_audit(tmp / "out-1x"))
    return t


def measure_once(a: argparse.Namespace, records: list[dict], corpus: Path, tmp: Path, m: dict[str, Any],
                 base_copies: int) -> None:
    """The one-off measures into ``m``: the stage profile, the fixed cost, memory at two sizes and
    the audit of the larger output."""
    change, scale = not a.identical_copies, a.memory_scale
    done = step("per-stage profile of one worker")
    m["stages"] = run_contender("stages", corpus, 1, tmp / "stages.log")
    done()
    m["run_one_record"] = None
    if not a.quick:  # with --quick the whole run is little more than its fixed cost
        done = step("sftdata run on one record (its fixed cost)")
        write_copies(records[:1], 1, tmp / "one.jsonl", change=change)
        m["run_one_record"] = run_sftdata(tmp / "one.jsonl", tmp / "out-one", a.workers)
        done()
    done = step(f"memory: sftdata run at {base_copies} and {base_copies * scale} copies")
    if a.quick or base_copies == (a.copies or 4):
        m["mem_1x"] = m["run"] if a.quick else run_sftdata(corpus, tmp / "mem-1x", a.workers, sample_memory=True)
    else:
        small = tmp / "corpus-base.jsonl"
        write_copies(records, base_copies, small, change=change)
        m["mem_1x"] = run_sftdata(small, tmp / "mem-1x", a.workers, sample_memory=True)
        small.unlink()
    big = tmp / f"corpus-{scale}x.jsonl"
    write_copies(records, base_copies * scale, big, change=change)
    m["mem_scaled"] = run_sftdata(big, tmp / f"mem-{scale}x", a.workers, sample_memory=True)
    big.unlink()
    done()
    m["audit_scaled"] = None
    if m["audit"] is not None and not a.quick and m["mem_scaled"].error is None:
        # Both commands have a fixed start-up cost; at a larger input the per-token ratio shows.
        done = step(f"sftdata audit at {scale}x input")
        m["audit_scaled"] = run_audit(tmp / f"mem-{scale}x")
        done()


def benchmark(a: argparse.Namespace, argv: list[str]) -> int:
    code = code_state()  # before the runs: the tree may change while they go on
    copies = 1 if a.quick and a.copies is None else (a.copies or 4)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="bench-prepare-")
    tmp = Path(tmp_ctx.name)
    try:
        records, source = base_records(a.corpus, a.quick, tmp, a.tool_free)
        if not records:
            print(f"no records in {source}", file=sys.stderr)
            return 2
        change = not a.identical_copies
        corpus = tmp / "corpus-1x.jsonl"
        n_records = write_copies(records, copies, corpus, change=change)
        write_copies(records[:STARTUP_RECORDS], 1, tmp / "startup.jsonl", change=change)
        done = step("render the corpus with the official template, once for (b), (L) and (LS) (not timed)")
        rendered = tmp / "rendered.pickle"
        rendering = run_contender("render", corpus, a.workers, tmp / "render.log", rendered)
        done()
        if rendering.error:
            print(f"rendering failed: {rendering.error}", file=sys.stderr)
            return 1
        repeats = 1 if a.quick else a.repeats
        timings = measure_rounds(a, corpus, tmp, rendered, repeats)
        m: dict[str, Any] = {k: median_measure(v) for k, v in timings.items()}
        m["trl"] = m["trl"] or Measure("TRL SFTTrainer prep", error="skipped (--skip-trl)")
        base_copies = a.memory_base or copies
        measure_once(a, records, corpus, tmp, m, base_copies)
        r = Results(a, argv, code, source, copies, n_records, corpus.stat().st_size, repeats, base_copies, rendering,
                    {k: v for k, v in timings.items() if v}, m, STARTUP_RECORDS)
    finally:
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            tmp_ctx.cleanup()
    summarize(r)
    print_report(r)
    if a.json:
        a.json.write_text(results_json(r))
    return exit_code(r)


def code_state() -> str:
    """The commit the numbers belong to, and whether the package had uncommitted edits."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sftdata"], capture_output=True, text=True,
                               cwd=ROOT, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    edited = sorted(line[3:] for line in dirty if line.strip())
    return f"{head}" + (f" + uncommitted edits in {', '.join(edited)}" if edited else "")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, help=f"messages JSONL (default: {DEFAULT_CORPUS} when present, "
                   f"else {SYNTH_RECORDS} tests.synth records)")
    p.add_argument("--copies", type=int, help="repeat the corpus N times (default 4; 1 with --quick)")
    p.add_argument("--workers", type=int, default=2, help="sftdata workers and TRL dataset_num_proc")
    p.add_argument("--memory-scale", type=int, default=4, help="input multiple for the memory-growth run")
    p.add_argument("--memory-base", type=int, help="copies of the smaller memory run (default: --copies)")
    p.add_argument("--scaling", action="store_true", help="also run (L) with 1 process and (c) with 1 worker "
                   "in every round, for the 1 -> N workers speed-up")
    p.add_argument("--repeats", type=int, default=3, help="rounds of (a), (b), (c) and the audit; medians "
                   "compare (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help=f"first {QUICK_RECORDS} records, 1 copy: under a minute")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--check", action="store_true", help="exit 3 when a target fails")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (corpus, outputs, logs)")
    p.add_argument("--tool-free", action="store_true", help="only the records without tools (as the issue's "
                   "first limit measurement)")
    p.add_argument("--skip-trl", action="store_true", help="leave out (a), the slowest contender")
    p.add_argument("--identical-copies", action="store_true", help="copies repeat the corpus's text (only the "
                   "ids differ): the old input, which flatters a tokenizer that caches what it has seen")
    p.add_argument("--contender", choices=["trl", "encode_batch", "limit", "limit_splintr", "stages", "render"],
                   help=argparse.SUPPRESS)
    p.add_argument("--rendered", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    if a.contender:  # child-process mode: one contender, one result line on stdout
        if a.corpus is None:
            raise SystemExit("--contender needs --corpus")
        m = {"trl": lambda: contender_trl(a.corpus, a.workers),
             "encode_batch": lambda: contender_encode_batch(a.corpus, a.rendered),
             "limit": lambda: contender_limit(a.corpus, a.workers, a.rendered),
             "limit_splintr": lambda: contender_limit_splintr(a.corpus, a.workers, a.rendered),
             "render": lambda: contender_render(a.corpus, a.rendered),
             "stages": lambda: contender_stages(a.corpus)}[a.contender]()
        print(RESULT_TAG + json.dumps(asdict(m)), flush=True)
        return 0
    script = sys.argv[0] if sys.argv[0].endswith(".py") else "benchmarks/bench_prepare.py"
    return benchmark(a, [script, *argv])


if __name__ == "__main__":
    sys.exit(main())
