"""Auditing data without a manifest (issue 18): errors, options, globs, HTML, FIFOs, ``--source``.

Data is our own rendering of generated records; see ``tests/foreign_data.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest
from click.testing import CliRunner

from sftdata.audit import run_audit
from sftdata.audit.command import audit_cmd
from sftdata.audit.integrity import AuditError
from sftdata.constants import IGNORE_INDEX
from tests.conftest import write_jsonl
from tests.foreign_data import ROOT, audit, failed, hits, records, write

# ------------------------------------------------------------------------------- errors, options


def test_wrong_vocabulary_is_one_clear_error(ours, tmp_path):
    _, rows = ours
    far = [{"input_ids": [x + 130000 for x in r["input_ids"]], "labels": r["labels"]} for r in rows]
    result = CliRunner().invoke(audit_cmd, [str(write(tmp_path / "far.parquet", far))])
    assert result.exit_code == 2 and "outside the vocabulary" in result.output and "--tokenizer" in result.output
    plain = [{"input_ids": [x for x in r["input_ids"] if x < 128000], "labels": r["labels"]} for r in rows]
    result = CliRunner().invoke(audit_cmd, [str(write(tmp_path / "q.parquet", plain))])
    assert result.exit_code == 2 and "no Llama-3 header token" in result.output
    with pytest.raises(AuditError, match="no input_ids"):
        run_audit(write(tmp_path / "x.jsonl", [{"text": "hello"}]))
    result = CliRunner().invoke(audit_cmd, [str(tmp_path / "far.parquet"), "--tokenizer", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "cannot load the tokenizer" in result.output
    from sftdata.tokenizer import _convert_builtin

    code, report, _ = audit(write(tmp_path / "ok.parquet", rows), "--tokenizer", str(_convert_builtin()))
    assert code == 0 and report["tokenizer"]["spec"] == str(_convert_builtin())


def test_glob_of_files_and_options_refused_for_prepared_folders(ours, tmp_path):
    src, rows = ours
    for k in range(3):
        write(tmp_path / "parts" / f"part-{k}.parquet", rows[2 * k:2 * k + 2])
    code, report, _ = audit(f"{tmp_path}/parts/*.parquet")
    assert code == 0 and [p["name"] for p in report["input"]["parts"]] == [f"part-{k}.parquet" for k in range(3)]
    fraction = report["stats"]["trained_fraction"]
    code, report, _ = audit(f"{tmp_path}/parts/*.parquet", "--min-trained-fraction", str(round(fraction + 0.01, 4)))
    assert code == 1 and failed(report) == {"min_trained_fraction"}
    from sftdata.config import settings_from_dict
    from sftdata.runner import run_pipeline

    s = settings_from_dict({})
    s.audit_enabled = False
    run_pipeline(s, [str(src)], tmp_path / "prepared")
    result = CliRunner().invoke(audit_cmd, [str(tmp_path / "prepared"), "--mask-column", "loss_mask"])
    assert result.exit_code == 2 and "only for data without a manifest" in result.output
    (tmp_path / "prepared" / "manifest.json").unlink()  # an unfinished run is not "data without a manifest"
    result = CliRunner().invoke(audit_cmd, [str(tmp_path / "prepared")])
    assert result.exit_code == 2 and "not a finished `sftdata run` output" in result.output


def test_html_report_shows_rows_of_data_without_manifest(ours, tmp_path):
    _, rows = ours
    path = write(tmp_path / "h.parquet", rows)
    result = CliRunner().invoke(audit_cmd, [str(path), "--html", str(tmp_path / "a.html")])
    assert result.exit_code == 0
    html = (tmp_path / "a.html").read_text()
    assert html.count('class="sample"') == 3 and "skip (no manifest)" in html and "tr t" in html
    assert "<td>read as</td>" in html and "records rejected" not in html


def test_fifo_in_place_of_a_file_does_not_hang(ours, tmp_path):
    """Issue 14: a FIFO where a shard or data file belongs is refused, not opened (open would block)."""
    src, rows = ours
    from sftdata.config import settings_from_dict
    from sftdata.runner import run_pipeline

    s = settings_from_dict({})
    s.audit_enabled = False
    out = tmp_path / "prepared"
    run_pipeline(s, [str(src)], out)
    shard = next(out.glob("shard-*.arrow"))
    shard.unlink()
    os.mkfifo(shard)
    os.mkfifo(tmp_path / "data.parquet")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for target, codes in ((out, (1,)), (tmp_path / "data.parquet", (2,))):
        proc = subprocess.run([sys.executable, "-m", "sftdata.cli", "audit", str(target)], capture_output=True,
                              text=True, timeout=120, env=env)
        assert proc.returncode in codes, proc.stdout + proc.stderr
    assert "not a regular file" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------- --source


def test_source_comparison_names_first_differing_token(ours, tmp_path, tok):
    src, rows = ours
    path = write(tmp_path / "s.parquet", rows)
    code, report, _ = audit(path, "--source", str(src), "--template", "llama3.2")
    assert code == 0 and next(r for r in report["rules"] if r["name"] == "source_match")["status"] == "pass"
    by_order = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    by_order[3]["input_ids"] = by_order[3]["input_ids"][:1] + by_order[3]["input_ids"]  # a second BOS
    by_order[3]["labels"] = [IGNORE_INDEX] + by_order[3]["labels"]
    code, report, _ = audit(write(tmp_path / "o.parquet", by_order), "--source", str(src), "--template", "llama3.2")
    [hit] = hits(report, "source_match")
    assert code == 1 and (hit["row"], hit["position"], hit["id"]) == (3, 1, "rec-3")
    assert "stored '<|begin_of_text|>'" in hit["message"] and "ours '<|start_header_id|>'" in hit["message"]
    code, report, _ = audit(path, "--source", str(src), "--template", "llama3")  # 3.0: no date header
    mism = hits(report, "source_match")
    assert code == 1 and [v["id"] for v in mism] == [r["id"] for r in rows]
    # records without a system message: 3.2 still opens with its dated system turn, 3.0 with the user's
    assert all(v["position"] == 2 and "stored 'system'" in v["message"] and "ours 'user'" in v["message"]
               for v in mism[0::2])
    result = CliRunner().invoke(audit_cmd, [str(path), "--source", str(src)])
    assert result.exit_code == 2 and "--template" in result.output


def test_source_in_another_input_format(ours, tmp_path):
    """--source takes what `sftdata run` reads (format detected): here ShareGPT, matched by order."""
    _, rows = ours
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    share = write_jsonl(tmp_path / "share.jsonl", [
        {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in r["messages"]]} for r in records()])
    unnamed = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    code, report, output = audit(write(tmp_path / "s.parquet", unnamed), "--source", str(share), "--template", "llama3.2")
    assert code == 0 and next(r for r in report["rules"] if r["name"] == "source_match")["status"] == "pass", output
    code, report, _ = audit(write(tmp_path / "short.parquet", unnamed[:-1]), "--source", str(share),
                            "--template", "llama3.2")
    assert code == 1 and [v["message"] for v in hits(report, "source_match")] == [
        "the source record renders but no row matches it"]


def test_plain_rows_end_token_is_a_target_not_padding(tok):
    """A prepared prompt/completion row may train an end token after its completion: not padding."""
    from sftdata.audit import check_table, rule_context
    from sftdata.audit.report import Violations

    eot_text = tok.token_id("<|end_of_text|>")
    text = tok.encode_text("The capital of France is Paris.")
    ids = [tok.bos_id, *text, eot_text]
    labels = [IGNORE_INDEX, *([IGNORE_INDEX] * 5), *text[5:], eot_text]
    table = pa.table({"id": ["p"], "input_ids": [ids], "labels": [labels], "content_hash": ["x"]})
    for plain, rules in ((True, set()), (False, {"pad_trained", "well_formed_turns", "trained_outside_assistant"})):
        sink = Violations()
        check_table(table, "mem", rule_context(tok, allow_plain=plain), sink)
        assert set(sink.counts) == rules, sink.items


def test_pad_id_below_the_control_tokens_is_still_found(tok, ours):
    """A --tokenizer whose pad id sorts below its control tokens: trained padding is still named."""
    from sftdata.audit import check_table, rule_context
    from sftdata.audit.report import Violations

    _, rows = ours
    low_pad = tok.encode_text("~")[0]
    row = rows[0]
    table = pa.table({"id": ["r"], "input_ids": [row["input_ids"] + [low_pad] * 2],
                      "labels": [row["labels"] + [low_pad] * 2]})
    ctx = rule_context(tok)
    for pads, rules in ((ctx.pad_ids, {"trained_outside_assistant", "well_formed_turns"}),
                        (frozenset({low_pad}), {"pad_trained", "well_formed_turns"})):
        ctx.pad_ids = pads
        sink = Violations()
        check_table(table, "mem", ctx, sink, prepared=False)
        assert set(sink.counts) == rules, sink.items
