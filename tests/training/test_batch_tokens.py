"""`--batch-tokens N`: token-budget micro-batches, measured on the real collator's tensors.

On shards with skewed lengths made by `sftdata run`: no micro-batch exceeds the budget as the
collator materialises it (padded, padding-free and packed), every row comes once per epoch, the
order is deterministic for a seed, several processes get equal shares, a row longer than the budget
is refused before the model loads, and padding waste is lower than with row-count batches.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner

from sftdata.planning.collator import ShardCollator
from sftdata.planning.token_batches import BatchSpec, ShardBatchSampler, dataset_ids, dataset_lengths
from sftdata.training.command import train_cmd
from sftdata.training.launcher import TrainOptions, build_trainer
from sftdata.training.tiny_model import TINY_SPEC
from tests.batching_data import prepare, skewed_records
from tests.conftest import load

PAD = 128004


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("skewed")
    records = skewed_records(160, seed=3)
    return {"plain": prepare(root, records, "plain"),
            "packed": prepare(root, records, "packed", "--packing", "bfd", "--max-length", "1024")}


def row_key(ids, labels) -> tuple:
    return tuple(ids), tuple(labels)


def epoch_tensors(ds, sampler, collator):
    """Every micro-batch of one epoch as the collator builds it, with the row indices it came from."""
    return [(b, collator([ds[i] for i in b])) for b in sampler]


@pytest.mark.parametrize("kind, padding_free, multiple", [("plain", False, None), ("plain", False, 64),
                                                          ("plain", True, None), ("packed", True, 8)])
def test_no_micro_batch_exceeds_the_budget_and_every_row_comes_once(folders, kind, padding_free, multiple):
    ds = load(folders[kind])
    lengths = dataset_lengths(ds)
    budget = 2 * max(lengths) + 100
    collator = ShardCollator(PAD, padding_free, multiple)
    sampler = ShardBatchSampler(lengths, BatchSpec(tokens=budget, padding_free=padding_free,
                                                   pad_to_multiple_of=multiple), seed=1)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = epoch_tensors(ds, sampler, collator)
        assert len(batches) == len(sampler)
        sizes = [t["input_ids"].numel() for _, t in batches]
        assert max(sizes) <= budget
        assert max(sizes) > budget // 2  # batches are filled, not one row each
        seen = Counter(i for b, _ in batches for i in b)
        assert sorted(seen) == list(range(len(ds))) and set(seen.values()) == {1}
        first_rows = batches[0][0]
        assert max(lengths[i] for i in first_rows) == max(lengths)  # the longest row comes first
    # The rows that came out of the tensors are the dataset's rows, untouched.
    got = Counter()
    for _, t in batches:
        if padding_free:
            continue
        for ids, labels, mask in zip(t["input_ids"], t["labels"], t["attention_mask"], strict=True):
            n = int(mask.sum())
            got[row_key(ids[:n].tolist(), labels[:n].tolist())] += 1
    if not padding_free:
        assert got == Counter(row_key(r["input_ids"], r["labels"]) for r in ds)


def test_order_is_deterministic_per_seed_and_changes_per_epoch(folders):
    lengths = dataset_lengths(load(folders["plain"]))
    spec = BatchSpec(tokens=3000)
    a, b, c = (ShardBatchSampler(lengths, spec, seed=s) for s in (5, 5, 6))
    assert list(a) == list(b)
    assert list(a) != list(c)
    a.set_epoch(1)
    assert list(a) != list(b) and len(list(a)) == len(list(b))  # reshuffled, same count (steps per epoch)


def test_row_count_batches_also_start_with_the_longest_row(folders):
    lengths = dataset_lengths(load(folders["plain"]))
    sampler = ShardBatchSampler(lengths, BatchSpec(rows=4), seed=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert max(lengths[i] for i in batches[0]) == max(lengths)
        assert all(len(b) == 4 for b in batches[:-1]) and sorted(i for b in batches for i in b) == list(
            range(len(lengths)))


@pytest.mark.parametrize("spec", [BatchSpec(tokens=2500), BatchSpec(tokens=2500, padding_free=True),
                                  BatchSpec(rows=5)])
def test_several_processes_get_equal_shares_of_every_row(folders, spec):
    lengths = dataset_lengths(load(folders["plain"]))
    world = 3
    ranks = [ShardBatchSampler(lengths, spec, seed=2, rank=r, world_size=world) for r in range(world)]
    shares = [list(s) for s in ranks]
    assert len({len(s) for s in shares}) == 1 and len({len(s) for s in ranks}) == 1
    assert len(shares[0]) == len(ranks[0])
    everything = [i for s in shares for b in s for i in b]
    assert sorted(everything) == list(range(len(lengths)))
    if spec.tokens:
        assert all(spec.size_of([lengths[i] for i in b]) <= spec.tokens for s in shares for b in s)
    else:
        assert all(len(b) <= spec.rows for s in shares for b in s)


def test_two_processes_share_the_rows_through_accelerate(tmp_path):
    """`torchrun --nproc-per-node 2` on CPU (gloo): each rank's dataloader, as the Trainer prepares it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = prepare(tmp_path, skewed_records(25, seed=1), "data", "--truncation", "truncate", "--max-length", "128")
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           str(repo / "tests" / "ddp_ranks.py"), str(data), str(tmp_path), "300"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["len"] == ranks[1]["len"] == len(ranks[0]["batches"]) == len(ranks[1]["batches"])
    got = Counter(tuple(row) for r in ranks for b in r["batches"] for row in b)
    assert got == Counter(tuple(r["input_ids"]) for r in load(data))
    assert all(len(b) * max(map(len, b)) <= 300 for r in ranks for b in r["batches"])


def test_a_row_longer_than_the_budget_is_refused_with_its_id(folders, tmp_path):
    ds = load(folders["plain"])
    lengths, ids = dataset_lengths(ds), dataset_ids(ds)
    longest = ids[int(lengths.argmax())]  # the first of the longest
    out = tmp_path / "out"
    result = CliRunner().invoke(train_cmd, [str(folders["plain"]), "--model", TINY_SPEC, "--output-dir", str(out),
                                            "--batch-tokens", str(max(lengths) - 1), "--skip-audit"])
    assert result.exit_code != 0
    assert longest in result.output and str(max(lengths)) in result.output
    assert not out.exists()


def padding_waste(batches) -> float:
    real = sum(int(t["attention_mask"].sum()) for _, t in batches)
    return 1 - real / sum(t["input_ids"].numel() for _, t in batches)


def test_token_batches_waste_less_padding_than_row_batches_at_the_same_rows_per_step(folders):
    ds = load(folders["plain"])
    lengths = dataset_lengths(ds)
    collator = ShardCollator(PAD)
    by_tokens = epoch_tensors(ds, ShardBatchSampler(lengths, BatchSpec(tokens=4096), seed=0), collator)
    rows_per_batch = round(len(ds) / len(by_tokens))
    by_rows = epoch_tensors(ds, ShardBatchSampler(lengths, BatchSpec(rows=rows_per_batch), seed=0), collator)
    token_waste, row_waste = padding_waste(by_tokens), padding_waste(by_rows)
    print(f"\npadding waste over {len(ds)} rows: --batch-tokens 4096 -> {len(by_tokens)} micro-batches, "
          f"{token_waste:.1%}; --batch-size {rows_per_batch} -> {len(by_rows)} micro-batches, {row_waste:.1%}")
    assert abs(len(by_rows) - len(by_tokens)) <= 0.1 * len(by_tokens) + 1  # about the same rows per step
    assert token_waste < row_waste / 2


def test_trainer_draws_token_budget_batches_and_trains(tmp_path):
    # Short rows: a CPU training step of the tiny model costs about 2 MB and 10 ms per token.
    data = prepare(tmp_path, skewed_records(30, seed=4), "short", "--truncation", "truncate", "--max-length", "200")
    ds = load(data)
    lengths = dataset_lengths(ds)
    budget = int(lengths.max()) + 100
    run = build_trainer(TrainOptions(data_dir=data, model=TINY_SPEC, output_dir=tmp_path / "out",
                                     max_steps=2, batch_tokens=budget, skip_audit=True,
                                     overrides=["save_strategy=no", "logging_steps=1"]))
    loader = run.trainer.get_train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader)
    assert max(b["input_ids"].numel() for b in batches) <= budget
    seen = Counter(row_key(ids[:int(m.sum())].tolist(), lab[:int(m.sum())].tolist())
                   for b in batches for ids, lab, m in zip(b["input_ids"], b["labels"], b["attention_mask"],
                                                           strict=True))
    assert seen == Counter(row_key(r["input_ids"], r["labels"]) for r in ds)
    assert int(batches[0]["attention_mask"].sum(1).max()) == max(lengths)  # longest first, through accelerate
    loader.set_epoch(1)  # what the Trainer calls each epoch: reshuffled, same count, longest first again
    again = list(loader)
    assert len(again) == len(batches) and int(again[0]["attention_mask"].sum(1).max()) == max(lengths)
    assert [b["input_ids"].shape for b in again] != [b["input_ids"].shape for b in batches]
    result = run.trainer.train()
    assert result.global_step == 2
    history = [e for e in run.trainer.state.log_history if "loss" in e]
    assert len(history) == 2 and json.dumps(history)
