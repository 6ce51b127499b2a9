"""A split recipe run (issue 30), exported with ``sftdata export``, is read back by two trainers' own
loaders with both splits: LLaMA-Factory (``get_dataset(tokenized_path=...)``, train and eval datasets)
and torchtune (``prepared(split=...)`` over the DatasetDict), each with exactly our trained tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import sftdata_cli
from tests.interop.harness import as_pairs, expected_pairs, run_in_venv, venv_python
from tests.mix.recipe_data import build


@pytest.fixture(scope="module")
def split_run(tmp_path_factory) -> Path:
    """A small split run: train and eval folders, each with rows of all three sources."""
    d = tmp_path_factory.mktemp("mixinterop")
    recipe = build(d, budget=6_000, eval_fraction=0.2)
    out = d / "out"
    r = sftdata_cli("run", recipe, "--output", out, "--workers", "1", "--no-audit")
    assert r.returncode == 0, r.stderr
    for split in ("train", "eval"):
        assert expected_pairs(out / split, per_conversation=False), f"{split} has no trained tokens"
    return out


def _export(run: Path, target: str, out: Path) -> dict:
    r = sftdata_cli("export", run, "--to", target, "--output", out)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert sorted(manifest["counts"]) == ["train", "validation"]
    return manifest


def test_llamafactory_reads_train_and_eval_of_a_split_run(split_run, tmp_path):
    venv_python("llamafactory")
    from sftdata.tokenizer import _convert_builtin

    out = tmp_path / "lf"
    _export(split_run, "llama-factory", out)
    cutoff = json.loads((split_run / "train" / "manifest.json").read_text())["pipeline"]["max_length"]
    got = run_in_venv("llamafactory", "llamafactory_pairs.py", str(out), str(_convert_builtin()), "0", str(cutoff),
                      str(tmp_path / "r.json"))
    assert got["splits"] == ["eval_dataset", "train_dataset"]
    for ours, theirs in (("train", "train_dataset"), ("eval", "eval_dataset")):
        assert got[theirs]["mismatched"] == 0
        want = expected_pairs(split_run / ours, per_conversation=False)
        assert len(got[theirs]["pairs"]) == len(want)
        assert as_pairs(got[theirs]["pairs"]) == want, f"{theirs} differs from our {ours} split"


def test_torchtune_reads_train_and_eval_of_a_split_run(split_run, tmp_path):
    venv_python("torchtune")
    out = tmp_path / "tt"
    _export(split_run, "torchtune", out)
    for ours, theirs in (("train", "train"), ("eval", "validation")):
        got = run_in_venv("torchtune", "torchtune_pairs.py", str(out), "0", theirs, str(tmp_path / f"{ours}.json"))
        want = expected_pairs(split_run / ours, per_conversation=False)
        assert got["mismatched"] == 0
        assert len(got["pairs"]) == len(want)
        assert as_pairs(got["pairs"]) == want, f"torchtune's {theirs} differs from our {ours} split"
