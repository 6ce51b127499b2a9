"""The lists that grow with the records live in files of their own: the manifest stays small, and
verify and the audit check the files against it (issue 31)."""

from __future__ import annotations

import json
import shutil

import orjson
import pytest

from sftdata.audit.integrity import verify_folder
from sftdata.audit.run import run_audit
from sftdata.errors import ManifestError
from sftdata.manifest import read_manifest
from sftdata.runner import run_pipeline
from sftdata.sidecars import SidecarError, iter_list, list_ids
from sftdata.storage import Folder
from sftdata.storage.layout import DUPLICATES_NAME, REPEATED_NAME, SIDECAR_NAMES, TRUNCATED_NAME, is_ours
from tests.conftest import settings, write_jsonl
from tests.synth import generate_records

TINY = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


def test_100k_duplicates_keep_the_manifest_small(tmp_path):
    src = tmp_path / "dups.jsonl"
    src.write_bytes((orjson.dumps(TINY) + b"\n") * 100_000)
    out = tmp_path / "o"
    manifest = run_pipeline(settings(), [str(src)], out, workers=2).manifest
    assert (out / "manifest.json").stat().st_size < 1 << 20
    assert manifest["counts"]["duplicate_records"] == 99_999
    lines = (out / DUPLICATES_NAME).read_bytes().splitlines()
    assert len(lines) == manifest["files"][DUPLICATES_NAME]["lines"] == 99_999
    assert json.loads(lines[0]) == {"id": "dups.jsonl:2", "duplicate_of": "dups.jsonl:1"}
    assert sum(1 for _ in iter_list(Folder(str(out)), manifest, DUPLICATES_NAME)) == 99_999
    assert verify_folder(out).ok


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    d = tmp_path_factory.mktemp("trunc")
    src = write_jsonl(d / "a.jsonl", generate_records(60, seed=4))
    out = d / "t"
    m = run_pipeline(settings(max_length=128, truncation="truncate"), [str(src)], out, workers=1).manifest
    assert m["counts"]["truncated_records"] > 0 and m["format_version"] == 2
    assert not {"truncated_ids", "duplicates", "repeated_ids"} & set(m)
    return out


@pytest.fixture()
def folder(truncated, tmp_path):
    return shutil.copytree(truncated, tmp_path / "copy")


def kinds(folder, name):
    return {p.kind for p in verify_folder(folder).problems if p.file == name}


def tamper(path):
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"id"', b'"iD"', 1))  # same size, other bytes


def test_the_lists_are_listed_and_ours(folder):
    manifest = read_manifest(str(folder))
    for name in SIDECAR_NAMES:
        entry = manifest.files[name]
        assert entry["bytes"] == (folder / name).stat().st_size and entry["sha256"].startswith("sha256:")
        assert is_ours(name)
    assert len(list_ids(Folder(str(folder)), manifest.to_json(), TRUNCATED_NAME)) == \
        manifest.counts["truncated_records"]
    assert verify_folder(folder).ok


@pytest.mark.parametrize("name", SIDECAR_NAMES)
def test_verify_names_a_tampered_or_deleted_list(folder, name):
    if name != TRUNCATED_NAME:  # the others are empty in this run: give them a line to tamper with
        (folder / name).write_bytes(b'{"id": "x"}\n')
        assert kinds(folder, name) == {"size_mismatch"}
    else:
        tamper(folder / name)
        assert kinds(folder, name) == {"corrupt"}
    (folder / name).unlink()
    assert kinds(folder, name) == {"missing"}


def test_verify_names_a_list_the_manifest_stops_listing(folder):
    m = json.loads((folder / "manifest.json").read_text())
    del m["files"][REPEATED_NAME]
    (folder / "manifest.json").write_text(json.dumps(m))
    assert kinds(folder, REPEATED_NAME) == {"missing"}


def test_verify_names_a_count_that_disagrees_with_its_list(folder):
    m = json.loads((folder / "manifest.json").read_text())
    m["counts"]["truncated_records"] += 1
    (folder / "manifest.json").write_text(json.dumps(m))
    assert kinds(folder, TRUNCATED_NAME) == {"count_mismatch"}


def cut_off(report) -> int:
    return report.violation_counts.get("turn_cut_off", 0)


@pytest.mark.parametrize("integrity", [True, False])
def test_audit_allows_listed_truncated_rows_only_while_the_list_is_intact(folder, integrity):
    assert run_audit(folder, check_integrity=integrity).ok
    tamper(folder / TRUNCATED_NAME)
    report = run_audit(folder, check_integrity=integrity)
    assert not report.ok and cut_off(report) > 0 and report.violation_counts["shard_integrity"] >= 1
    (folder / TRUNCATED_NAME).unlink()
    report = run_audit(folder, check_integrity=integrity)
    assert not report.ok and cut_off(report) > 0 and report.violation_counts["shard_integrity"] >= 1


def test_reader_refuses_an_altered_list(folder):
    manifest = read_manifest(str(folder)).to_json()
    tamper(folder / TRUNCATED_NAME)
    with pytest.raises(SidecarError, match="not the file the manifest lists"):
        list_ids(Folder(str(folder)), manifest, TRUNCATED_NAME)


def test_version_1_folders_are_read_with_their_inline_lists(folder):
    m = json.loads((folder / "manifest.json").read_text())
    ids = [json.loads(x)["id"] for x in (folder / TRUNCATED_NAME).read_bytes().splitlines()]
    for name in SIDECAR_NAMES:
        del m["files"][name]
        (folder / name).unlink()
    m.update(format_version=1, truncated_ids=ids, duplicates=[], repeated_ids=[])
    (folder / "manifest.json").write_text(json.dumps(m))
    manifest = read_manifest(str(folder))
    assert manifest.extra["truncated_ids"] == ids  # kept on a round trip
    assert list_ids(Folder(str(folder)), manifest.to_json(), TRUNCATED_NAME) == frozenset(ids)
    assert verify_folder(folder).ok and run_audit(folder).ok


@pytest.mark.parametrize("version", [0, 3, "2", None, True])
def test_other_versions_are_refused_in_one_line(folder, version):
    m = json.loads((folder / "manifest.json").read_text())
    m["format_version"] = version
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=r"format_version .*; this sftdata reads versions 1, 2") as info:
        read_manifest(str(folder))
    assert "\n" not in str(info.value)
