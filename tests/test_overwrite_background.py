"""--overwrite deletes the old files on a thread while the BPE engine is built (``output.Emptying``):
the same files go, in the same order (markers last), before anything new is written."""

from __future__ import annotations

import pytest

from sftdata import config, output, runner
from sftdata.output import prepare
from sftdata.storage import Folder
from sftdata.storage.folder import LocalFolder
from sftdata.storage.layout import MANIFEST_NAME
from sftdata.synth import generate_records
from tests.conftest import write_jsonl


@pytest.fixture()
def finished(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", generate_records(60, seed=51))
    settings = config.settings_from_dict({}, overrides={"chunk_size": "8KiB", "audit_enabled": False})
    out = tmp_path / "out"
    runner.run_pipeline(settings, [str(src)], out, workers=1)
    return settings, src, out


def test_background_overwrite_deletes_every_old_file_markers_last(finished, monkeypatch):
    _settings, _src, out = finished
    old = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert MANIFEST_NAME in old and any(n.startswith("shard-") for n in old)
    order: list[str] = []
    real = LocalFolder.delete

    def delete(self, name: str) -> None:
        order.append(name)
        real(self, name)

    monkeypatch.setattr(LocalFolder, "delete", delete)
    emptying = prepare(Folder(out), resume=False, overwrite=True, background=True)
    assert isinstance(emptying, output.Emptying)
    emptying.wait()
    deleted = [n for n in order if not n.startswith(".write-probe")]
    assert sorted(deleted) == old
    assert deleted[-1] == MANIFEST_NAME  # a finished run has no plan: it goes with _chunks at the commit
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_a_failed_background_deletion_stops_the_run_before_it_writes(finished, monkeypatch):
    settings, src, out = finished
    real = LocalFolder.delete

    def delete(self, name: str) -> None:
        if name.startswith("shard-"):
            raise PermissionError(13, "Permission denied", name)
        real(self, name)

    monkeypatch.setattr(LocalFolder, "delete", delete)
    with pytest.raises(PermissionError):
        runner.run_pipeline(settings, [str(src)], out, workers=1, overwrite=True)
    assert (out / MANIFEST_NAME).exists(), "the markers go last: the folder is still a finished run"
    assert not list(out.glob("_chunks/*.json")), "nothing of the new run was written"


def test_overwrite_without_background_returns_nothing_pending(finished):
    _settings, _src, out = finished
    assert prepare(Folder(out), resume=False, overwrite=True) is None
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_background_overwrite_gives_the_same_bytes(finished, tmp_path):
    settings, src, out = finished
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    runner.run_pipeline(settings, [str(src)], out, workers=2, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
