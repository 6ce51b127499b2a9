"""``audit``, ``verify``, ``inspect``, ``export`` and ``overlap`` on a split run's folder (issue 30)."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest

from tests.conftest import sftdata_cli, snapshot
from tests.mix.recipe_data import build


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixcmd")
    dest = d / "out"
    r = sftdata_cli("run", build(d), "--output", dest, "--workers", "2", "--no-audit")
    assert r.returncode == 0, r.stderr
    return dest


def test_audit_and_verify_cover_both_splits(out, tmp_path):
    report = tmp_path / "audit.json"
    r = sftdata_cli("audit", out, "--json", report)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "split train" in r.stdout and "split eval" in r.stdout
    assert set(json.loads(report.read_text())["splits"]) == {"train", "eval"}
    r = sftdata_cli("verify", out)
    assert r.returncode == 0 and "split eval" in r.stdout, r.stdout + r.stderr
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = json.loads((copy / "eval" / "manifest.json").read_text())["shards"][0]["file"]
    (copy / "eval" / shard).write_bytes((copy / "eval" / shard).read_bytes()[:-9])
    r = sftdata_cli("verify", copy)
    assert r.returncode == 1, r.stdout + r.stderr


def test_inspect_finds_an_eval_row_by_id(out):
    with pa.OSFile(str(next((out / "eval").glob("shard-*.arrow")))) as f:
        row_id = pa.ipc.open_stream(f).read_all().column("id")[0].as_py()
    r = sftdata_cli("inspect", out, "--id", row_id, "--no-color")
    assert r.returncode == 0 and f"id='{row_id}'" in r.stdout, r.stdout + r.stderr


def test_export_of_a_split_run_has_both_splits(out, tmp_path):
    from tests.conftest import load

    dest = tmp_path / "hf"
    r = sftdata_cli("export", out, "--to", "hf", "--output", dest)
    assert r.returncode == 0, r.stderr
    ds = load(dest)
    assert set(ds) == {"train", "validation"}
    train = json.loads((out / "train" / "manifest.json").read_text())["totals"]["rows"]
    evals = json.loads((out / "eval" / "manifest.json").read_text())["totals"]["rows"]
    assert (ds["train"].num_rows, ds["validation"].num_rows) == (train, evals)
    r = sftdata_cli("export", out, "--to", "mds", "--output", tmp_path / "mds")
    assert r.returncode == 2 and "no validation split" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_plan_of_a_split_run_plans_its_train_split(out):
    r = sftdata_cli("plan", out, "--batch-size", "2", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "train" / "manifest.json").read_text())["totals"]["rows"]
    plan = json.loads(r.stdout)
    assert plan["rows"] == rows and plan["folder"].endswith("train")


def test_manifest_names_uri_inputs_without_their_secrets(tmp_path):
    recipe = build(tmp_path)
    text = recipe.read_text().replace(f"input: {tmp_path}/chat.jsonl", f"input: file://{tmp_path}/chat.jsonl?token=SECRET")
    uri = tmp_path / "uri.yaml"
    uri.write_text(text)
    r = sftdata_cli("run", uri, "--output", tmp_path / "out", "--no-audit")
    assert r.returncode == 0, r.stderr
    assert "SECRET" not in (tmp_path / "out" / "train" / "manifest.json").read_text()


def test_python_api_runs_a_recipe_dict(tmp_path):
    import yaml

    import sftdata

    doc = yaml.safe_load(build(tmp_path).read_text())
    summary = sftdata.run(doc, output=tmp_path / "out", workers=1)
    assert set(summary.splits) == {"train", "eval"} and set(summary.audit) == {"train", "eval"}
    assert all(report.ok for report in summary.audit.values())
    assert summary.mix["sources"]["alpaca"]["sampling_factor"] == 2.5
    from sftdata.errors import UsageError

    with pytest.raises(UsageError, match="sources"):
        sftdata.run(doc, inputs=["x.jsonl"], output=tmp_path / "other")


def test_overwrite_refuses_a_folder_with_foreign_files_and_changes_nothing(out, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "notes.txt").write_text("mine")
    before = snapshot(copy)
    (tmp_path / "r").mkdir()
    recipe = build(tmp_path / "r")
    r = sftdata_cli("run", recipe, "--output", copy, "--overwrite", "--no-audit")
    assert r.returncode == 2 and "notes.txt" in r.stderr, r.stderr
    assert snapshot(copy) == before
    (copy / "notes.txt").unlink()
    (copy / "train" / "notes.txt").write_text("mine")
    before = snapshot(copy)
    r = sftdata_cli("run", recipe, "--output", copy, "--overwrite", "--no-audit")
    assert r.returncode == 2 and "notes.txt" in r.stderr, r.stderr
    assert snapshot(copy) == before


def test_overlap_of_a_split_run_compares_train_with_eval(out, tmp_path):
    r = sftdata_cli("overlap", out, "--prompts", "--fail-on-overlap")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"in {out / 'train'}, 0 in {out / 'eval'}" in r.stdout and "0 shared" in r.stdout, r.stdout
    # A folder laid out the same way whose eval split is a copy of its train split: every row overlaps.
    leaky = tmp_path / "leaky"
    shutil.copytree(out, leaky)
    shutil.rmtree(leaky / "eval")
    shutil.copytree(leaky / "train", leaky / "eval")
    rows = json.loads((leaky / "train" / "manifest.json").read_text())["totals"]["rows"]
    r = sftdata_cli("overlap", leaky, "--fail-on-overlap", "--limit", "0")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{rows} record(s) in {leaky / 'train'}, {rows} in {leaky / 'eval'}" in r.stdout, r.stdout
    r = sftdata_cli("overlap", out / "train")
    assert r.returncode == 2 and "split run's folder" in r.stderr and "Traceback" not in r.stderr, r.stderr
