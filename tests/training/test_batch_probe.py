"""`--batch-size auto` / `--batch-tokens auto`: the worst-case probe before step 1, on CPU.

- A model that raises `torch.OutOfMemoryError` when a batch holds more than T tokens (T is not
  told to the search) makes `auto` pick the largest size under T, in rows and in tokens; gradient
  accumulation keeps the effective batch; the decision is printed; the weights are unchanged.
- The tiny model under `--memory-limit X`: the chosen size's training step, measured independently
  (the process's peak resident memory), stays under X; a dataset of longer rows picks fewer rows.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import pytest
import torch

from sftdata.planning.collator import ShardCollator
from sftdata.planning.memory import CpuMeter
from sftdata.planning.sizing import longest_rows, probe_decision
from sftdata.planning.token_batches import dataset_lengths
from sftdata.training import launcher as launcher_module
from sftdata.training.launcher import TrainOptions, build_trainer
from sftdata.training.settings import build_sft_config, resolve_settings
from sftdata.training.tiny_model import TINY_SPEC, build_tiny_llama3
from tests.batching_data import prepare, skewed_records
from tests.conftest import load

PAD = 128004
HUGE = 2**40  # a CPU "memory limit" no trial reaches: only the out-of-memory errors decide


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    # Rows are cut short (`--truncation truncate`): on CPU a token of the tiny model's 128256-way
    # logits costs about 2 MB in a training step, so short rows keep each probe step to seconds.
    cut = ("--truncation", "truncate", "--max-length")
    return {"short": prepare(root, skewed_records(40, seed=8, long_every=1000), "short", *cut, "128"),
            "long": prepare(root, skewed_records(40, seed=8, long_every=1, repeat=3), "long", *cut, "320")}


def oom_above(model, threshold: int) -> list[int]:
    """Make ``model`` raise OutOfMemoryError for batches over ``threshold`` tokens; returns the sizes it saw."""
    seen: list[int] = []
    forward = model.forward

    def guarded(**kw):
        seen.append(kw["input_ids"].numel())
        if kw["input_ids"].numel() > threshold:
            raise torch.OutOfMemoryError(f"CUDA out of memory (test: {kw['input_ids'].numel()} > {threshold})")
        return forward(**kw)

    model.forward = guarded
    return seen


def guard_loaded_models(monkeypatch, threshold: int) -> None:
    """Every model `sftdata train` loads raises OutOfMemoryError above ``threshold`` tokens."""
    real_load = launcher_module.load_model

    def load_guarded(spec, seed, init_kwargs):
        model = real_load(spec, seed, init_kwargs)
        oom_above(model, threshold)
        return model

    monkeypatch.setattr(launcher_module, "load_model", load_guarded)


def sft_args(tmp_path: Path, **kw):
    settings, _ = resolve_settings(TrainOptions(data_dir=tmp_path, model=TINY_SPEC, output_dir=tmp_path / "o", **kw))
    return build_sft_config(settings)


@pytest.mark.parametrize("unit, padding_free", [("rows", False), ("tokens", False), ("tokens", True)])
def test_auto_picks_the_largest_size_under_a_hidden_threshold(folders, tmp_path, unit, padding_free):
    ds = load(folders["short"])
    lengths = dataset_lengths(ds)
    longest = max(lengths)
    threshold = int(3.6 * longest)  # the search is never told this
    model = build_tiny_llama3(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = oom_above(model, threshold)
    collator = ShardCollator(PAD, padding_free)
    requested = 24 if unit == "rows" else 20 * longest
    rows = longest_rows(ds, lengths, unit, padding_free, 64, 64 * longest)
    decision = probe_decision(unit, model, sft_args(tmp_path), lengths, rows, collator, requested=requested,
                              grad_accum=None, memory_limit=HUGE)
    assert any(n > threshold for n in seen)  # the search went past T and was stopped by an OOM
    assert any(t.note == "out of memory" for t in decision.trials)
    fit = decision.largest_fit
    if unit == "rows":  # the worst batch: `fit` longest rows padded to the longest
        assert fit * longest <= threshold < (fit + 1) * longest
        assert decision.effective == requested and decision.size <= fit
    else:
        step = decision.trials[0].size if not padding_free else None
        assert fit <= threshold
        bigger = [t for t in decision.trials if t.size > fit]
        assert bigger and all(not t.fits for t in bigger)
        assert min(t.size for t in bigger) - fit <= (step or fit)  # no size between fit and a failure is left out
        assert decision.size * decision.grad_accum >= requested
        assert (decision.grad_accum - 1) * fit < requested  # no more accumulation than needed
    for k, v in model.state_dict().items():  # the optimizer stepped with lr 0: weights as they were
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_auto_decision_is_printed_and_used_by_the_trainer(folders, tmp_path, monkeypatch):
    ds = load(folders["short"])
    longest = max(dataset_lengths(ds))
    threshold = int(2.5 * longest)
    guard_loaded_models(monkeypatch, threshold)
    lines: list[str] = []
    run = build_trainer(TrainOptions(data_dir=folders["short"], model=TINY_SPEC, output_dir=tmp_path / "out",
                                     max_steps=1, batch_size="auto", global_batch_size=8, memory_limit=HUGE,
                                     skip_audit=True), log=lines.append)
    text = "\n".join(lines)
    assert "2 rows per micro-batch x 4 accumulation x 1 process(es) = 8 rows per optimizer step" in text, text
    assert re.search(r"batch probe on cpu: memory .*peak .* at 2 rows", text), text
    assert run.trainer.args.gradient_accumulation_steps == 4 and run.decision.largest_fit == 2
    batches = list(run.trainer.get_train_dataloader())
    assert max(len(b["input_ids"]) for b in batches) == 2 and len(batches) == math.ceil(len(ds) / 2)


def test_auto_token_budget_through_the_trainer(folders, tmp_path, monkeypatch):
    ds = load(folders["short"])
    lengths = dataset_lengths(ds)
    threshold = int(4.5 * max(lengths))
    guard_loaded_models(monkeypatch, threshold)
    lines: list[str] = []
    requested = 10 * max(lengths)
    run = build_trainer(TrainOptions(data_dir=folders["short"], model=TINY_SPEC, output_dir=tmp_path / "out",
                                     max_steps=1, batch_tokens="auto", global_batch_tokens=requested,
                                     memory_limit=HUGE, skip_audit=True), log=lines.append)
    decision = run.decision
    assert decision.unit == "tokens" and decision.largest_fit <= threshold
    assert decision.size * decision.grad_accum >= requested
    assert run.trainer.args.gradient_accumulation_steps == decision.grad_accum > 1
    assert f"{decision.size} tokens per micro-batch x {decision.grad_accum} accumulation" in "\n".join(lines)
    batches = list(run.trainer.get_train_dataloader())
    assert max(b["input_ids"].numel() for b in batches) <= decision.size
    assert sum(len(b["input_ids"]) for b in batches) == len(ds)


def peak_rss_of(fn) -> int:
    """The process's peak resident memory while ``fn`` runs (read independently of the probe)."""
    meter = CpuMeter(HUGE)
    meter.reset()
    fn()
    return meter.peak()


def one_step(trainer) -> None:
    """Forward, backward and the optimizer step of the trainer on its first micro-batch."""
    trainer.create_optimizer()
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.compute_loss(trainer.model, batch).backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def test_cpu_memory_limit_holds_and_longer_rows_pick_fewer(folders, tmp_path):
    meter = CpuMeter(HUGE)
    meter.reset()
    limit = meter.current() + 2 * 2**30  # what this process holds now, plus 2 GiB for training
    picked = {}
    for name in ("short", "long"):
        run = build_trainer(TrainOptions(data_dir=folders[name], model=TINY_SPEC, output_dir=tmp_path / name,
                                         max_steps=1, batch_size="auto", global_batch_size=64, memory_limit=limit,
                                         skip_audit=True, overrides=["save_strategy=no"]), log=lambda _: None)
        decision = run.decision
        assert decision.peak is not None and decision.peak <= decision.memory_limit < limit
        assert any(not t.fits for t in decision.trials)  # the limit, not the cap, stopped the search
        picked[name] = decision.size
        # One real step on the epoch's first (longest) batch of the chosen size, measured by us.
        peak = peak_rss_of(functools.partial(one_step, run.trainer))
        assert peak < limit, (name, decision.summary(), peak)
        print(f"\n{name} rows (longest {max(dataset_lengths(load(folders[name])))} tokens), limit {limit}: "
              f"{decision.summary()}\nmeasured peak of one step at the chosen size: {peak}")
        del run
    assert picked["long"] < picked["short"], picked
