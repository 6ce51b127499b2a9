"""`sftdata plan DIR`: the batching report, checked against the real sampler and collator."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from click.testing import CliRunner

from sftdata.cli import main
from sftdata.planning.collator import ShardCollator
from sftdata.planning.memory import CpuMeter
from sftdata.planning.plan import make_plan, plan_figures
from sftdata.planning.token_batches import BatchSpec, ShardBatchSampler, dataset_ids, dataset_lengths
from tests.batching_data import prepare, skewed_records
from tests.conftest import load


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("plan"), skewed_records(90, seed=11), "data")


def plan_cli(*args: str):
    result = CliRunner().invoke(main, ["plan", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_figures_match_the_collator_and_the_data(folder):
    ds = load(folder)
    lengths, ids = dataset_lengths(ds), dataset_ids(ds)
    budget = 2 * max(lengths)
    plan = make_plan(folder, batch_sizes=[1, 4], batch_tokens=[budget], grad_accum=2, seed=9)
    assert sum(c for _, _, c in plan.histogram) == len(ds) == plan.rows
    for lo, hi, count in plan.histogram:
        assert count == sum(lo <= n <= hi for n in lengths)
    assert [n for _, n in plan.longest] == sorted(lengths, reverse=True)[:5]
    assert all(lengths[ids.index(rid)] == n for rid, n in plan.longest)
    one, four, tokens = plan.sizes
    assert one.padding_waste == 0 and one.micro_batches == len(ds)
    assert four.micro_batches == math.ceil(len(ds) / 4)
    # The token-budget figures, measured on the tensors the collator builds for the same epoch.
    collator = ShardCollator(pad_id=128004)
    built = [collator([ds[i] for i in b]) for b in ShardBatchSampler(lengths, BatchSpec(tokens=budget), seed=9)]
    real = sum(int(t["attention_mask"].sum()) for t in built)
    positions = sum(t["input_ids"].numel() for t in built)
    assert tokens.micro_batches == len(built)
    assert tokens.padding_waste == pytest.approx(1 - real / positions)
    assert tokens.max_batched_tokens == max(t["input_ids"].numel() for t in built) <= budget
    assert tokens.tokens_per_step == pytest.approx(2 * real / len(built))
    assert tokens.padding_waste < four.padding_waste


def test_cli_text_and_json(folder):
    ds = load(folder)
    lengths, ids = dataset_lengths(ds), dataset_ids(ds)
    longest_id = ids[int(lengths.argmax())]  # the first of the longest
    text = plan_cli(folder, "--batch-tokens", f"{max(lengths) - 1},{4 * max(lengths)}")
    assert longest_id in text and "--batch-tokens" in text and "padding" in text
    assert f"{max(lengths) - 1} are below the longest row" in text
    data = json.loads(plan_cli(folder, "--json"))
    assert data == json.loads(json.dumps(plan_figures(folder)))
    assert Counter(s["unit"] for s in data["sizes"]) == Counter({"rows": 6, "tokens": 5})
    assert data["longest"][0] == [longest_id, max(lengths)]


def test_plan_runs_the_probe_once_as_a_table(tmp_path):
    data = prepare(tmp_path, skewed_records(20, seed=2), "short", "--truncation", "truncate", "--max-length", "64")
    meter = CpuMeter(2**40)
    meter.reset()
    limit = meter.current() + 1024 * 2**20
    out = json.loads(plan_cli(data, "--model", "builtin:tiny-llama3", "--device", "cpu",
                              "--memory-limit", str(limit), "--json"))
    probe = out["probe"]
    assert probe["device"] == "cpu" and probe["memory_limit"] < limit
    trials = probe["trials"]
    fits = [t for t in trials if t["fits"]]
    assert fits and all(t["peak"] <= probe["memory_limit"] for t in fits)
    assert probe["largest_fit"] == max(t["size"] for t in fits)
    assert all(not t["fits"] for t in trials if t["size"] > probe["largest_fit"])
    text = plan_cli(data, "--batch-size", "1", "--model", "builtin:tiny-llama3", "--memory-limit", str(limit))
    assert "worst-case probe on cpu" in text and "largest that fits" in text


def test_gpu_check_script_says_it_needs_cuda():
    import importlib.util
    from pathlib import Path

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: run benchmarks/gpu_batch_probe.py itself")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_batch_probe.py"
    spec = importlib.util.spec_from_file_location("gpu_batch_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([]) == 2


def test_the_html_audit_report_carries_the_plan_chart(tmp_path):
    """The padding-waste figures of `sftdata plan` appear in the audit page, one bar per size."""
    import json

    from click.testing import CliRunner

    from sftdata.audit.command import audit_cmd
    from sftdata.cli import main
    from sftdata.planning.plan import plan_figures
    from tests.conftest import write_jsonl
    from tests.synth import generate_records

    src = write_jsonl(tmp_path / "in.jsonl", generate_records(40, seed=8))
    out = tmp_path / "o"
    assert CliRunner().invoke(main, ["run", "--input", str(src), "--output", str(out), "--workers", "1",
                                     "--no-audit"]).exit_code == 0
    page = tmp_path / "a.html"
    assert CliRunner().invoke(audit_cmd, [str(out), "--html", str(page)]).exit_code == 0
    html = page.read_text()
    chart = html[html.index('id="plan-padding"'):]
    chart = chart[:chart.index("</svg>")]
    sizes = plan_figures(out)["sizes"]
    assert sizes and chart.count('class="bar"') == len(sizes)
    for f in sizes:
        assert f">{100 * f['padding_waste']:,.0f}</text>" in chart, json.dumps(f)
