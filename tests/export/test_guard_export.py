"""`export` (and `train --output-dir`) behind `run`'s output guard (issue 27).

Deletion checks never touch real folders: the home folder is a fake ``HOME`` under ``tmp_path``,
the current folder a ``tmp_path`` subfolder, and a deletion spy records and refuses every delete
or rename, so a refusal that came too late fails the test instead of removing anything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sftdata.cli import main
from tests.conftest import snapshot
from tests.interop.harness import make_prepared

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("guard"), "run1", packed=False, n=40)


@pytest.fixture()
def src(prepared, tmp_path) -> Path:
    """A private copy under ``tmp_path/parent/run1`` with a sibling, so deleting the parent would show."""
    copy = tmp_path / "parent" / "run1"
    shutil.copytree(prepared, copy)
    (tmp_path / "parent" / "sibling.txt").write_text("mine")
    return copy


class Spy:
    """Records and refuses every delete and rename (shutil.rmtree, os.unlink/remove/rmdir/rename/replace)."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[tuple] = []
        for mod, name in ((shutil, "rmtree"), (os, "unlink"), (os, "remove"), (os, "rmdir"), (os, "rename"),
                          (os, "replace")):
            monkeypatch.setattr(mod, name, self._refuse(name))

    def _refuse(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, *map(str, args)))
            raise PermissionError(f"deletion spy: {name} refused")
        return call


def export(*args: str):
    return CliRunner().invoke(main, ["export", *map(str, args)])


@pytest.mark.parametrize("where", ["foreign", "home", "cwd", "parent", "holds_source", "source"])
def test_export_overwrite_of_a_folder_not_its_own_is_refused_and_deletes_nothing(src, tmp_path, monkeypatch, where):
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "todo.txt").write_text("keep")
    monkeypatch.setenv("HOME", str(home))
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "draft.md").write_text("mine")
    monkeypatch.chdir(work)
    out = {"foreign": project, "home": home, "cwd": Path("."), "parent": src.parent,
           "holds_source": tmp_path, "source": src}[where]
    before = snapshot(tmp_path)
    spy = Spy(monkeypatch)
    res = export(src, "--to", "parquet", "--output", out, "--overwrite", "--skip-audit")
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert spy.calls == []
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_export_overwrite_replaces_only_an_earlier_export(src, tmp_path):
    out = tmp_path / "exp"
    assert export(src, "--to", "hf", "--output", out).exit_code == 0
    (out / "notes.txt").write_text("mine")  # a user's file inside an export: --overwrite stops
    res = export(src, "--to", "hf", "--output", out, "--overwrite")
    assert res.exit_code == 2 and "notes.txt" in res.output
    assert (out / "notes.txt").read_text() == "mine" and (out / "export_manifest.json").is_file()
    (out / "notes.txt").unlink()
    assert export(src, "--to", "parquet", "--output", out, "--overwrite").exit_code == 0
    assert not list(out.glob("*.arrow")) and list(out.glob("*.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "parent"]


def test_a_run_folder_is_not_an_export_to_overwrite(src, tmp_path, prepared):
    other = tmp_path / "other"
    shutil.copytree(prepared, other)
    before = snapshot(other)
    res = export(src, "--to", "hf", "--output", other, "--overwrite")
    assert res.exit_code == 2 and "not an sftdata output folder (export)" in res.output
    assert snapshot(other) == before


def test_stale_staging_of_earlier_exports_is_cleaned_by_a_rerun(src, tmp_path):
    out = tmp_path / "exp"
    for name in (".exp.export-tmp", ".exp.export-tmp4242", ".exp.export-old4242"):
        (tmp_path / name / "train").mkdir(parents=True)
        (tmp_path / name / "data-00000.arrow").write_bytes(b"x" * 100)
        (tmp_path / name / "train" / "state.json").write_text("{}")
        (tmp_path / name / ".data-00001.arrow.tmp99").write_bytes(b"x")
    (tmp_path / ".exp.export-tmp77").mkdir()
    (tmp_path / ".exp.export-tmp77" / "mine.txt").write_text("not an export's")
    res = export(src, "--to", "hf", "--output", out)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exp.export-tmp77", "exp", "parent"]
    assert (tmp_path / ".exp.export-tmp77" / "mine.txt").read_text() == "not an export's"
    assert "left" in res.output and ".exp.export-tmp77" in res.output


def _cli(*args: str, fault: str | None = None, no_exchange: bool = False, timeout: int = 120):
    code = "from sftdata.cli import main; main()"
    if no_exchange:
        code = "import sftdata.export.publish as p; p.exchange = lambda a, b: False; " + code
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    env.pop("SFTDATA_FAULT", None)
    if fault:
        env["SFTDATA_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def _target(out: Path) -> str | None:
    path = out / "export_manifest.json"
    return json.loads(path.read_text())["target"] if path.is_file() else None


@pytest.mark.parametrize(("fault", "no_exchange", "after"), [
    ("export-before-exchange:1", False, "hf"),
    ("export-after-exchange:1", False, "parquet"),
    ("export-between-renames:1", True, None),  # no exchange: OUT is back after the rerun's recovery
])
def test_a_kill_between_the_steps_leaves_out_whole(src, tmp_path, fault, no_exchange, after):
    out = tmp_path / "exp"
    assert _cli("export", src, "--to", "hf", "--output", out).returncode == 0
    hf = snapshot(out)
    killed = _cli("export", src, "--to", "parquet", "--output", out, "--overwrite", fault=fault,
                  no_exchange=no_exchange)
    assert killed.returncode == -signal.SIGKILL
    if after is not None:
        assert _target(out) == after  # OUT is the old export or the new one, whole
        if after == "hf":  # a killed process's lock file stays (the next lock takes it over), nothing else
            assert {k: v for k, v in snapshot(out).items() if k != ".sftdata.lock"} == hf
    rerun = _cli("export", src, "--to", "parquet", "--output", out, "--overwrite", no_exchange=no_exchange)
    assert rerun.returncode == 0, rerun.stderr
    assert _target(out) == "parquet" and not list(out.glob("*.arrow"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "parent"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_during_export_exit_130_and_clean_the_staging(src, tmp_path, sig):
    out = tmp_path / "exp"
    assert _cli("export", src, "--to", "hf", "--output", out).returncode == 0
    before = snapshot(out)
    writing = tmp_path / "writing"  # the first Parquet file is being written (into the staging folder)
    slow = ("import pathlib, time, sftdata.export.columnar as c; w = c._write_parquet; "
            f"c._write_parquet = lambda *a: (pathlib.Path({str(writing)!r}).touch(), time.sleep(20), w(*a)); "
            "from sftdata.cli import main; main()")
    proc = subprocess.Popen([sys.executable, "-c", slow, "export", str(src), "--to", "parquet", "--output", str(out),
                             "--overwrite", "--skip-audit"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while not writing.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / ".exp.export-tmp").is_dir()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    writing.unlink()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "parent"]


@pytest.mark.parametrize("where", ["home", "cwd", "foreign", "data"])
def test_train_output_dir_refusals(prepared, tmp_path, monkeypatch, where):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("keep")
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    monkeypatch.chdir(work)
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "paper.tex").write_text("mine")
    out = {"home": home, "cwd": Path("."), "foreign": foreign, "data": prepared / "model"}[where]
    before = snapshot(tmp_path)
    res = CliRunner().invoke(main, ["train", str(prepared), "--model", "builtin:tiny-llama3", "--output-dir",
                                    str(out), "--max-steps", "1"])
    assert res.exit_code == 2, res.output
    assert "--output-dir" in res.output or "output folder" in res.output
    assert snapshot(tmp_path) == before and not (prepared / "model").exists()


def test_an_out_that_is_a_symlink_is_refused(src, tmp_path):
    real = tmp_path / "real"
    assert export(src, "--to", "hf", "--output", real).exit_code == 0
    (tmp_path / "link").symlink_to(real)
    before = snapshot(real)
    res = export(src, "--to", "parquet", "--output", tmp_path / "link", "--overwrite")
    assert res.exit_code == 2 and "symbolic link" in res.output
    assert snapshot(real) == before and (tmp_path / "link").is_symlink()
