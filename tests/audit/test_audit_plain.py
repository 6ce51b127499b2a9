"""Rows without chat structure pass the audit only where the pipeline makes them on purpose."""

from __future__ import annotations

import json

from sftdata.audit import run_audit
from sftdata.config import settings_from_dict
from sftdata.runner import run_pipeline
from tests.conftest import write_jsonl


def test_plain_rows_audit_by_their_own_rules(tmp_path):
    src = write_jsonl(tmp_path / "pc.jsonl", [
        {"id": "p1", "prompt": "The capital of France is", "completion": " Paris."},
        {"id": "p2", "prompt": [{"role": "user", "content": "2+2?"}],
         "completion": [{"role": "assistant", "content": "4"}]}])
    s = settings_from_dict({}, overrides={"input_format": "prompt_completion"})
    s.audit_enabled = False
    run_pipeline(s, [str(src)], tmp_path / "pc")
    assert run_audit(tmp_path / "pc").ok
    # the same plain row claimed to come from `messages` input is a violation
    manifest = json.loads((tmp_path / "pc" / "manifest.json").read_text())
    manifest["pipeline"]["input_format"] = "messages"
    (tmp_path / "pc" / "manifest.json").write_text(json.dumps(manifest))
    report = run_audit(tmp_path / "pc", check_integrity=False)
    assert not report.ok
    assert {v["id"] for v in report.to_json()["violations"]} >= {"p1"}
