"""What the manifest covers beyond the shards: the quarantine, the datasets metadata, the accounting."""

from __future__ import annotations

import json

import pytest

from sftdata.audit.integrity import verify_folder
from sftdata.config import Settings
from sftdata.runner import run_pipeline
from tests.conftest import write_jsonl
from tests.synth import generate_records


@pytest.fixture()
def folder(tmp_path):
    records = generate_records(30, seed=4) + [{"messages": [{"role": "user", "content": "no answer"}]}] * 3
    src = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "o"
    summary = run_pipeline(Settings(), [str(src)], out, workers=1)
    assert summary.manifest["counts"]["rejected"]  # there is something in the quarantine
    return out


def kinds(folder, name):
    return {p.kind for p in verify_folder(folder).problems if p.file == name}


def test_clean_folder_verifies_and_lists_its_files(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"quarantine.jsonl", "dataset_info.json", "state.json", "duplicates.jsonl",
                                      "truncated_ids.jsonl", "repeated_ids.jsonl"}
    assert manifest["files"]["quarantine.jsonl"]["lines"] == sum(manifest["counts"]["rejected"].values())
    assert verify_folder(folder).ok


def test_a_deleted_quarantine_is_missing(folder):
    (folder / "quarantine.jsonl").unlink()
    assert kinds(folder, "quarantine.jsonl") == {"missing"}


def test_an_edited_quarantine_is_corrupt(folder):
    q = folder / "quarantine.jsonl"
    data = q.read_bytes()
    q.write_bytes(data.replace(b'"reason"', b'"rEason"', 1))
    assert kinds(folder, "quarantine.jsonl") == {"corrupt"}
    q.write_bytes(data.split(b"\n", 1)[1])  # one line dropped
    assert kinds(folder, "quarantine.jsonl") == {"truncated"}


def test_float_labels_in_dataset_info_are_caught(folder):
    info = folder / "dataset_info.json"
    doc = json.loads(info.read_text())
    doc["features"]["labels"]["feature"]["dtype"] = "float32"
    info.write_text(json.dumps(doc, indent=2, sort_keys=True))
    assert kinds(folder, "dataset_info.json")


def test_accounting_identity(folder):
    m = folder / "manifest.json"
    doc = json.loads(m.read_text())
    doc["counts"]["records_read"] += 1  # one record lost without a trace
    m.write_text(json.dumps(doc))
    assert "count_mismatch" in kinds(folder, "manifest.json")
