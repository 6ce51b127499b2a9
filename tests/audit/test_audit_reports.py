"""Issue 28: the report files CI publishes are written atomically, and an audit that is refused or
fails to write never leaves an earlier run's passing report at the path it was asked to write."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from sftdata.audit.command import audit_cmd, verify_cmd
from sftdata.constants import IGNORE_INDEX
from tests.foreign_data import write


def _passing_reports(ours, tmp_path):
    _, rows = ours
    good = write(tmp_path / "good.parquet", rows)
    out = {name: tmp_path / "ci" / name for name in ("audit.json", "junit.xml", "audit.html")}
    args = ["--json", str(out["audit.json"]), "--junit", str(out["junit.xml"]), "--html", str(out["audit.html"])]
    result = CliRunner().invoke(audit_cmd, [str(good), *args])
    assert result.exit_code == 0 and json.loads(out["audit.json"].read_text())["ok"]
    assert 'failures="0"' in out["junit.xml"].read_text()
    return rows, out, args


def test_a_refused_audit_removes_the_earlier_passing_reports(ours, tmp_path):
    rows, out, args = _passing_reports(ours, tmp_path)
    broken = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    broken[2]["labels"] = broken[2]["labels"] + [IGNORE_INDEX]  # one row longer than its ids
    result = CliRunner().invoke(audit_cmd, [str(write(tmp_path / "bad.parquet", broken)), *args])
    assert result.exit_code == 2
    assert not any(p.exists() for p in out.values()), "a stale passing report survived a refused audit"
    assert all(f"removed {p}" in result.output for p in out.values())


def test_a_failing_audit_replaces_the_passing_reports(ours, tmp_path):
    rows, out, args = _passing_reports(ours, tmp_path)
    bad = [dict(r, labels=list(r["labels"])) for r in rows]
    bad[1]["labels"][-1] = IGNORE_INDEX  # the last <|eot_id|> untrained
    result = CliRunner().invoke(audit_cmd, [str(write(tmp_path / "bad.parquet", bad)), *args])
    assert result.exit_code == 1
    assert not json.loads(out["audit.json"].read_text())["ok"] and 'failures="1"' in out["junit.xml"].read_text()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_report_that_cannot_be_written_leaves_no_part_and_no_stale_report(ours, tmp_path, monkeypatch):
    """The JUnit write fails (a full disk): the JSON written before it is this run's, the old
    JUnit file is not left standing, and no temporary file remains."""
    rows, out, args = _passing_reports(ours, tmp_path)
    real_fsync = os.fsync

    def full_disk(fd):
        if ".junit.xml.tmp" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    bad = [dict(r, labels=list(r["labels"])) for r in rows]
    bad[1]["labels"][-1] = IGNORE_INDEX
    result = CliRunner().invoke(audit_cmd, [str(write(tmp_path / "bad.parquet", bad)), *args])
    assert result.exit_code == 2 and "No space left" in result.output
    assert not json.loads(out["audit.json"].read_text())["ok"]
    assert not out["junit.xml"].exists() and not out["audit.html"].exists()
    assert sorted(p.name for p in (tmp_path / "ci").iterdir()) == ["audit.json"]


def test_verify_refused_removes_its_stale_json(tmp_path):
    stale = tmp_path / "verify.json"
    stale.write_text('{"ok": true}')
    result = CliRunner().invoke(verify_cmd, [str(tmp_path / "nowhere"), "--json", str(stale)])
    assert result.exit_code == 2 and not stale.exists()
