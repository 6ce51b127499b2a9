"""Auditing what Axolotl's own preprocessing writes (issue 18): ``type: chat_template`` with
``chat_template: llama3`` and ``roles_to_train: ["assistant"]``, no packing, run in Axolotl's own
venv (0.19.0) by ``tests/interop/scripts/axolotl_preprocess.py``; each processed train dataset
is saved with ``save_to_disk`` and audited here with `run_audit`, no manifest.

Found: Axolotl's default (``train_on_eos`` unset, which it treats as ``turn``) passes every rule,
and gives the very rows of an explicit ``train_on_eos: turn``. Its other documented values fail,
each on the rule that names what it does: ``last`` leaves the ``<|eot_id|>`` of every assistant
turn but the final one untrained, ``none`` leaves every one untrained (``eot_trained``), ``all``
trains the closing ``<|eot_id|>`` of every system and user turn (``prompt_trained``).
"""

from __future__ import annotations

import datasets
import pytest

from sftdata.audit import run_audit
from sftdata.constants import IGNORE_INDEX
from sftdata.tokenizer import _convert_builtin, load_tokenizer
from tests.foreign_data import MANIFEST_ONLY
from tests.interop.harness import run_in_venv, venv_python
from tests.synth import generate_records, write_jsonl

RUNS = ("default", "turn", "last", "none", "all")  # train_on_eos; "default" leaves it out of the config


def _records() -> list[dict]:
    """Multi-turn generated records, role and content only (Axolotl has no per-turn ``weight``)."""
    return [{"id": r["id"], "messages": [{"role": m["role"], "content": m["content"]} for m in r["messages"]]}
            for r in generate_records(24, seed=18, tools=False)]


@pytest.fixture(scope="module")
def axolotl(tmp_path_factory):
    venv_python("axolotl")  # skips without the venv; fails under SFTDATA_INTEROP=1
    base = tmp_path_factory.mktemp("axolotl")
    write_jsonl(base / "records.jsonl", _records())
    work = base / "work"
    work.mkdir()
    got = run_in_venv("axolotl", "axolotl_preprocess.py", str(base / "records.jsonl"), str(_convert_builtin()),
                      str(work), ",".join(f"{r}={r}" for r in RUNS), str(base / "r.json"))
    assert got["axolotl"] == "0.19.0" and got["rows"] == len(_records())
    assert got["columns"] == ["attention_mask", "input_ids", "labels"]
    assert got["runs"] == {"default": None, **{r: r for r in RUNS[1:]}}
    return {**{name: work / name for name in RUNS}, "prepared": work / "prepared"}


def _rules(report, status: str) -> set[str]:
    return {k for k, s in report.statuses.items() if s == status}


def _rows(report, rule: str) -> list[int]:
    return sorted({v["row"] for v in report.violations if v["rule"] == rule})


def test_axolotl_default_chat_template_preprocessing_passes(axolotl):
    report = run_audit(axolotl["default"])
    assert report.ok, report.violations[:5]
    assert report.input["kind"] == "datasets Dataset" and report.input["parts"][0]["labels_column"] == "labels"
    assert set(MANIFEST_ONLY) <= _rules(report, "skip")
    assert all(report.skip_reasons[r] == "no manifest" for r in MANIFEST_ONLY)
    ds = datasets.load_from_disk(str(axolotl["default"]))
    assert report.stats["rows"] == len(ds) == len(_records())
    assert report.stats["trained_tokens"] == sum(sum(x != IGNORE_INDEX for x in row) for row in ds["labels"]) > 0
    # the default is train_on_eos: turn, token for token
    turn = datasets.load_from_disk(str(axolotl["turn"]))
    assert ds["input_ids"] == turn["input_ids"] and ds["labels"] == turn["labels"]
    assert run_audit(axolotl["turn"]).ok


def test_axolotl_train_on_eos_last_leaves_earlier_turns_unstoppable(axolotl):
    """``train_on_eos: last`` trains only the conversation's final <|eot_id|>: every row with more
    than one answer fails ``eot_trained``, and only those rows."""
    tok = load_tokenizer("builtin:llama3")
    report = run_audit(axolotl["last"])
    assert _rules(report, "fail") == {"eot_trained"}
    multi = [k for k, r in enumerate(_records()) if sum(m["role"] == "assistant" for m in r["messages"]) > 1]
    assert 0 < len(multi) < len(_records()) and _rows(report, "eot_trained") == multi
    ds = datasets.load_from_disk(str(axolotl["last"]))
    for v in (v for v in report.violations if v["rule"] == "eot_trained"):
        ids, labels = ds[v["row"]]["input_ids"], ds[v["row"]]["labels"]
        assert ids[v["position"]] == tok.eot_id and labels[v["position"]] == IGNORE_INDEX
        assert v["position"] < max(i for i, t in enumerate(ids) if t == tok.eot_id)  # never the last closer


def test_axolotl_train_on_eos_none_fails_every_row(axolotl):
    report = run_audit(axolotl["none"])
    assert _rules(report, "fail") == {"eot_trained"}
    assert _rows(report, "eot_trained") == list(range(len(_records())))


def test_axolotl_train_on_eos_all_trains_prompt_closers(axolotl):
    """``train_on_eos: all`` also trains the <|eot_id|> that closes each system and user turn."""
    report = run_audit(axolotl["all"])
    assert _rules(report, "fail") == {"prompt_trained"}
    hits = [v for v in report.violations if v["rule"] == "prompt_trained"]
    assert sorted(v["row"] for v in hits) == list(range(len(_records())))
    assert all("first '<|eot_id|>' in the" in v["message"] and "turn's closing token" in v["message"] for v in hits)


def test_axolotl_dataset_prepared_path_audits_as_written(axolotl):
    """What Axolotl itself cached under ``dataset_prepared_path`` (all five entries merged, 5 x 24
    rows) audits from that folder: the blocks of ``last`` and ``none`` fail ``eot_trained``, the
    block of ``all`` fails ``prompt_trained``, the default and ``turn`` blocks are clean. The folder
    also holds Axolotl's ``datasets_prep.lock``, so a glob ``prepared/*`` is not data (exit 2)."""
    n = len(_records())
    report = run_audit(axolotl["prepared"])
    assert report.stats["rows"] == len(RUNS) * n
    assert _rules(report, "fail") == {"eot_trained", "prompt_trained"}
    block = {name: range(k * n, (k + 1) * n) for k, name in enumerate(RUNS)}
    assert set(_rows(report, "prompt_trained")) == set(block["all"])
    assert set(_rows(report, "eot_trained")) <= set(block["last"]) | set(block["none"])
    assert set(block["none"]) <= set(_rows(report, "eot_trained"))
    assert (axolotl["prepared"] / "datasets_prep.lock").exists()
