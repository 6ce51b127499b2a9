"""The mask audit (issue 3): every corruption of the labels is caught, clean output passes.

The prepared folders are built here with the real Llama-3 tokenizer and a small renderer of the
documented row layout, so these tests do not depend on the pipeline being written in parallel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.audit.arrays import iter_slices
from sftdata.audit.command import audit_cmd, inspect_cmd, verify_cmd
from sftdata.audit.integrity import AuditError, verify_folder
from sftdata.audit.report import RULES, Violations
from sftdata.audit.rules import check_slice
from sftdata.audit.run import run_audit
from sftdata.audit.slice_view import RuleContext
from sftdata.constants import IGNORE_INDEX

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "audit-report.schema.json").read_text())

CONVERSATIONS = {
    "conv-basic": [("system", "You are a terse assistant."), ("user", "What is 2+2?"), ("assistant", "4.")],
    "conv-multi": [("user", "Name a colour."), ("assistant", "Blue.", 0), ("user", "Another one?"),
                   ("assistant", "Green, like grass.")],
    "conv-tool": [("system", "Tools: weather(city)."), ("user", "Weather in Paris?"),
                  ("assistant", '{"name": "weather", "parameters": {"city": "Paris"}}'),
                  ("ipython", '{"temp_c": 21}'), ("assistant", "It is 21 °C in Paris.")],
    "conv-unicode": [("user", "Say hello in Japanese 🙂"), ("assistant", "こんにちは！ (konnichiwa)")],
    "conv-long": [("user", "Count to twenty."),
                  ("assistant", " ".join(str(i) for i in range(1, 21)) + ".\n\nDone.")],
    "conv-trunc": [("system", "Be verbose."), ("user", "Tell me a story."),
                   ("assistant", "Once upon a time there was a very long story that never ended")],
}
TRUNCATE_AT = 6  # conv-trunc loses its last 6 tokens (the tail of the answer and its <|eot_id|>)
SHARDS = [["conv-basic", "conv-multi", "conv-tool"], ["conv-unicode", "conv-long", "conv-trunc"]]


def render(tok, turns) -> tuple[list[int], list[int]]:
    """The documented row layout: BOS, then per turn header + "\\n\\n" + content + <|eot_id|>."""
    ids, labels = [tok.bos_id], [IGNORE_INDEX]
    for turn in turns:
        role, content, weight = (*turn, 1) if len(turn) == 2 else turn
        head = [tok.start_header_id, *tok.encode_text(role), tok.end_header_id, *tok.encode_text("\n\n")]
        body = tok.encode_text(content) + [tok.eot_id]
        ids += head + body
        labels += [IGNORE_INDEX] * len(head) + (body if role == "assistant" and weight else [IGNORE_INDEX] * len(body))
    return ids, labels


def make_rows(tok) -> dict[str, dict]:
    rows = {}
    for cid, turns in CONVERSATIONS.items():
        ids, labels = render(tok, turns)
        if cid == "conv-trunc":
            ids, labels = ids[:-TRUNCATE_AT], labels[:-TRUNCATE_AT]
        rows[cid] = {"id": cid, "input_ids": ids, "labels": labels, "content_hash": hashlib.sha256(cid.encode()).hexdigest()}
    return rows


def pack(rows: list[dict]) -> dict:
    ids, labels, pos = [], [], []
    for r in rows:
        ids += r["input_ids"]
        labels += r["labels"]
        pos += list(range(len(r["input_ids"])))
    return {"id": rows[0]["id"], "input_ids": ids, "labels": labels, "content_hash": rows[0]["content_hash"],
            "position_ids": pos, "seq_lengths": [len(r["input_ids"]) for r in rows], "packed_ids": [r["id"] for r in rows]}


def write_shard(path: Path, rows: list[dict]) -> None:
    fields = [pa.field("id", pa.string()), pa.field("input_ids", pa.list_(pa.int32())),
              pa.field("labels", pa.list_(pa.int32())), pa.field("content_hash", pa.string())]
    if rows and "position_ids" in rows[0]:
        fields += [pa.field("position_ids", pa.list_(pa.int32())), pa.field("seq_lengths", pa.list_(pa.int32())),
                   pa.field("packed_ids", pa.list_(pa.string()))]
    schema = pa.schema(fields)
    table = pa.Table.from_pylist(rows, schema=schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)


def refresh_manifest(folder: Path) -> dict:
    """Recompute every per-shard and total count and hash, as an honest writer would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    totals = {"rows": 0, "tokens": 0, "trained_tokens": 0}
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        with pa.memory_map(str(path)) as src:
            table = pa.ipc.open_stream(src).read_all()
        labels = np.concatenate([np.asarray(x, dtype=np.int64) for x in table.column("labels").to_pylist()] or [[]])
        entry.update(rows=table.num_rows, tokens=sum(len(x) for x in table.column("input_ids").to_pylist()),
                     trained_tokens=int(np.count_nonzero(labels != IGNORE_INDEX)), bytes=path.stat().st_size,
                     sha256=hashlib.sha256(path.read_bytes()).hexdigest())
        for k in totals:
            totals[k] += entry[k]
    manifest["totals"] = totals
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def write_folder(folder: Path, tok, shards: list[list[dict]], *, packed: bool = False,
                 truncated: list[str] = ("conv-trunc",), conversations: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"shard-{i:06d}-00.arrow" for i in range(len(shards))]
    for name, rows in zip(names, shards, strict=True):
        write_shard(folder / name, rows)
    written = conversations if conversations is not None else sum(len(r) for r in shards)
    manifest = {
        "format": "sftdata-shards", "format_version": 1, "created_by": {"sftdata": "0.1.0"},
        "pipeline": {"template": "llama3.2", "date_string": "26 Jul 2024", "max_length": 512,
                     "packing": "bfd" if packed else "none"},
        "fingerprints": {"tokenizer": tok.fingerprint},
        "tokenizer": {"spec": "builtin:llama3", "fingerprint": tok.fingerprint, "vocab_size": tok.vocab_size,
                      "bos_id": tok.bos_id, "eot_id": tok.eot_id, "start_header_id": tok.start_header_id,
                      "end_header_id": tok.end_header_id, "header_newline_ids": [271]},
        "shards": [{"file": n} for n in names],
        "counts": {"records_read": written + 3, "records_written": written, "blank_lines": 1,
                   "rejected": {"invalid_json": 1, "no_assistant": 2}, "truncated_records": len(truncated)},
        "totals": {}, "truncated_ids": list(truncated),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))
    refresh_manifest(folder)
    return folder


@pytest.fixture(scope="module")
def rows(tok):
    return make_rows(tok)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tok, rows) -> Path:
    return write_folder(tmp_path_factory.mktemp("clean") / "out", tok, [[rows[c] for c in s] for s in SHARDS])


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tok, rows) -> Path:
    r = rows
    shards = [[pack([r["conv-basic"], r["conv-multi"]]), pack([r["conv-tool"]])],
              [pack([r["conv-unicode"], r["conv-long"], r["conv-trunc"]])]]
    return write_folder(tmp_path_factory.mktemp("packed") / "out", tok, shards, packed=True, conversations=6)


def copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def audit(folder: Path, *args: str):
    """Run the click command; return (result, parsed JSON report)."""
    out = folder.parent / f"{folder.name}-report.json"
    result = CliRunner().invoke(audit_cmd, [str(folder), "--json", str(out), *args])
    assert result.exit_code in (0, 1), result.output + repr(result.exception)
    report = json.loads(out.read_text())
    jsonschema.validate(report, SCHEMA)
    return result, report


def status(report: dict) -> dict[str, str]:
    return {r["name"]: r["status"] for r in report["rules"]}


def edit_row(folder: Path, shard: int, row_id: str, change) -> None:
    """Apply ``change(input_ids, labels)`` to one row, rewrite the shard and the manifest honestly."""
    path = folder / f"shard-{shard:06d}-00.arrow"
    with pa.memory_map(str(path)) as src:
        table = pa.ipc.open_stream(src).read_all()
    rows = table.to_pylist()
    for row in rows:
        if row["id"] == row_id:
            change(row["input_ids"], row["labels"])
    write_shard(path, rows)
    refresh_manifest(folder)


# ---------------------------------------------------------------------------------------------- clean


def test_clean_folder_passes_every_rule(clean):
    result, report = audit(clean)
    assert result.exit_code == 0, result.output
    assert report["ok"] and report["violations"] == []
    states = status(report)
    assert set(states) == set(RULES)
    assert states["packing"] == states["source_match"] == "skip"
    assert all(states[r] == "pass" for r in RULES if r not in ("packing", "source_match", "min_trained_fraction",
                                                               "max_rejected_fraction"))
    assert report["stats"]["rows"] == 6 and report["stats"]["truncated_rows"] == 1
    assert report["stats"]["turns_per_role"]["ipython"] == 1
    assert 0 < report["stats"]["trained_fraction"] < 1
    assert "OK: every rule holds" in result.output and "invalid_json" in result.output


def test_summary_tables_are_aligned_and_coloured_only_on_request(clean, tmp_path, tok):
    folder = copy(clean, tmp_path)
    edit_row(folder, 0, "conv-multi", lambda ids, lab: lab.__setitem__(slice(None), [IGNORE_INDEX] * len(lab)))
    report = run_audit(folder)
    plain, coloured = report.summary_text(), report.summary_text(color=True)
    assert "\x1b[" not in plain and "\x1b[1;31mfail\x1b[0m" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain
    lines = plain.splitlines()
    boxes, box = [], []
    for line in lines:  # every table's lines, from its top border to its bottom one, have one width
        if line.startswith(("┌", "│", "├", "└")):
            box.append(len(line))
            if line.startswith("└"):
                boxes.append(box)
                box = []
    assert len(boxes) == 3 and all(len(set(b)) == 1 for b in boxes)
    rule_rows = {ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in lines
                 if ln.startswith("│") and ln.split("│")[1].strip() in RULES}
    assert rule_rows["row_has_trained_tokens"] == "fail" and rule_rows["single_bos"] == "pass"
    assert any(ln.startswith("FAIL ") and "conv-multi" in ln for ln in lines)
    assert lines[-1] == "FAILED: row_has_trained_tokens"


# --------------------------------------------------------------------------------------- corruptions


def _assistant_eot(tok, ids, labels):
    return [i for i, t in enumerate(ids) if t == tok.eot_id and labels[i] != IGNORE_INDEX][0]


CORRUPTIONS = {
    # name: (shard, row id, rule that must fail, change(tok, ids, labels))
    "train_user_token": (0, "conv-basic", "prompt_trained",
                         lambda tok, ids, lab: lab.__setitem__(ids.index(882) + 3, ids[ids.index(882) + 3])),
    "train_header_token": (0, "conv-tool", "trained_outside_assistant",
                           lambda tok, ids, lab: lab.__setitem__(len(ids) - 1 - ids[::-1].index(tok.start_header_id),
                                                                 tok.start_header_id)),
    "shift_labels": (1, "conv-long", "label_matches_input",
                     lambda tok, ids, lab: lab.__setitem__(slice(None), lab[1:] + [IGNORE_INDEX])),
    "untrain_eot": (1, "conv-unicode", "eot_trained",
                    lambda tok, ids, lab: lab.__setitem__(_assistant_eot(tok, ids, lab), IGNORE_INDEX)),
    "mask_whole_row": (0, "conv-multi", "row_has_trained_tokens",
                       lambda tok, ids, lab: lab.__setitem__(slice(None), [IGNORE_INDEX] * len(lab))),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_fails_naming_the_row(name, clean, tmp_path, tok):
    shard, row_id, rule, change = CORRUPTIONS[name]
    folder = copy(clean, tmp_path)
    before: list[int] = []
    after: list[int] = []

    def corrupt(ids, lab):
        before.extend(lab)
        change(tok, ids, lab)
        after.extend(lab)

    edit_row(folder, shard, row_id, corrupt)
    result, report = audit(folder)
    assert result.exit_code == 1, result.output
    assert row_id in result.output
    states = status(report)
    assert states[rule] == "fail"
    # the manifest was rewritten to match: only the semantic rules can notice
    assert states["shard_integrity"] == "pass" and states["manifest_counts"] == "pass"
    assert {v["id"] for v in report["violations"]} == {row_id}
    hit = [v for v in report["violations"] if v["rule"] == rule][0]
    assert hit["shard"] == f"shard-{shard:06d}-00.arrow" and isinstance(hit["row"], int)
    first_change = next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b)
    assert hit["position"] == (None if rule == "row_has_trained_tokens" else first_change)


def test_truncated_row_must_be_listed(clean, tmp_path):
    folder = copy(clean, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["truncated_ids"] = []
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result, report = audit(folder)
    assert result.exit_code == 1
    assert [v["id"] for v in report["violations"] if v["rule"] == "turn_cut_off"] == ["conv-trunc"]


def test_partial_turn_in_truncated_row_only_allowed_last(clean, tmp_path, tok):
    folder = copy(clean, tmp_path)
    # untrain the first content token of the cut-off answer: still fine (last turn of a truncated row)
    edit_row(folder, 1, "conv-trunc", lambda ids, lab: lab.__setitem__(
        len(ids) - 1 - ids[::-1].index(tok.end_header_id) + 2, IGNORE_INDEX))
    assert audit(folder)[0].exit_code == 0


def test_tokenizer_fingerprint_mismatch_fails(clean, tmp_path):
    folder = copy(clean, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tokenizer"]["fingerprint"] = "sha256:" + "0" * 64
    manifest["tokenizer"]["bos_id"] = 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result, report = audit(folder)
    assert result.exit_code == 1 and status(report)["tokenizer_fingerprint"] == "fail"
    assert report["violations_total"] == 2


def test_manifest_counts_mismatch_fails(clean, tmp_path):
    folder = copy(clean, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shards"][1]["trained_tokens"] += 1
    manifest["totals"]["rows"] = 7
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result, report = audit(folder)
    assert result.exit_code == 1 and status(report)["manifest_counts"] == "fail"
    assert len([v for v in report["violations"] if v["rule"] == "manifest_counts"]) == 2


# ------------------------------------------------------------------------- direct rules (in memory)


def check_rows(tok, rows: list[dict], *, truncated=(), max_length=None, chunk_tokens=None) -> Violations:
    ctx = RuleContext(tok.bos_id, tok.start_header_id, tok.end_header_id, (tok.eot_id, tok.eom_id), (271,),
                      tok.vocab_size, tok.decode, frozenset(truncated), max_length)
    sink = Violations()
    fields = {"id": pa.string(), "input_ids": pa.list_(pa.int32()), "labels": pa.list_(pa.int32())}
    table = pa.Table.from_pylist(rows, schema=pa.schema(list(fields.items())))
    for first, cols in iter_slices(table, False, chunk_tokens):
        check_slice(cols, first, "mem", ctx, sink, False)
    return sink


def _variant(tok, rows, what):
    r = dict(rows["conv-basic"], input_ids=list(rows["conv-basic"]["input_ids"]), labels=list(rows["conv-basic"]["labels"]))
    ids, lab = r["input_ids"], r["labels"]
    eh = ids.index(tok.end_header_id)
    if what == "labels_length":
        lab.append(IGNORE_INDEX)
    elif what == "token_range":
        ids[eh + 2] = tok.vocab_size + 5
    elif what == "extra_bos":
        ids[eh + 2] = tok.bos_id
    elif what == "no_bos":
        ids[0] = tok.start_header_id
    elif what == "unknown_role":
        role = tok.encode_text("robot")
        ids[2:eh], lab[2:eh] = role, [IGNORE_INDEX] * len(role)
    elif what == "long_unknown_role":  # too many tokens to pack into one int64 key
        role = tok.encode_text("supervisor of the night shift")
        ids[2:eh], lab[2:eh] = role, [IGNORE_INDEX] * len(role)
    elif what == "no_newline":
        del ids[eh + 1], lab[eh + 1]
    elif what == "tail_after_eot":
        ids.append(tok.encode_text("x")[0]), lab.append(IGNORE_INDEX)
    elif what == "stray_after_bos":
        ids.insert(1, tok.encode_text("x")[0]), lab.insert(1, IGNORE_INDEX)
    elif what == "train_bos":
        lab[0] = tok.bos_id
    elif what == "train_newline":
        lab[len(ids) - 1 - ids[::-1].index(tok.end_header_id) + 1] = 271
    return r


@pytest.mark.parametrize("what,rules", [
    ("labels_length", {"labels_length"}), ("token_range", {"token_range"}), ("extra_bos", {"single_bos"}),
    ("no_bos", {"single_bos", "well_formed_turns"}), ("unknown_role", {"well_formed_turns"}),
    ("long_unknown_role", {"well_formed_turns"}),
    ("no_newline", {"well_formed_turns"}), ("tail_after_eot", {"well_formed_turns"}),
    ("stray_after_bos", {"well_formed_turns"}),
    ("train_bos", {"trained_outside_assistant"}), ("train_newline", {"trained_outside_assistant"}),
])
def test_rule_catches(tok, rows, what, rules):
    sink = check_rows(tok, [rows["conv-multi"], _variant(tok, rows, what), rows["conv-tool"]])
    assert set(sink.counts) == rules, (what, sink.items)
    assert {v["id"] for v in sink.items} == {"conv-basic"} and {v["row"] for v in sink.items} == {1}


def test_truncation_excuses_only_the_last_turn(tok):
    turns = [("user", "Hi there"), ("assistant", "Hello! How can I help?"), ("user", "Tell me more"),
             ("assistant", "Well, there is a lot to say about that")]
    ids, labels = render(tok, turns)
    cut = {"id": "t", "input_ids": ids[:-4], "labels": labels[:-4]}  # last answer cut, eot gone
    assert not check_rows(tok, [cut], truncated={"t"}).counts
    assert set(check_rows(tok, [cut]).counts) == {"turn_cut_off"}
    first_eot = ids.index(tok.eot_id, ids.index(78191))
    partial = dict(cut, labels=[IGNORE_INDEX if i == first_eot else x for i, x in enumerate(cut["labels"])])
    sink = check_rows(tok, [partial], truncated={"t"})
    assert set(sink.counts) == {"eot_trained"} and sink.items[0]["position"] == first_eot
    unclosed = {"id": "t", "input_ids": ids[:first_eot] + ids[first_eot + 1:-4],
                "labels": labels[:first_eot] + labels[first_eot + 1:-4]}
    assert "well_formed_turns" in check_rows(tok, [unclosed], truncated={"t"}).counts


def test_max_length_and_slices_keep_row_numbers(tok, rows):
    many = [rows[c] for c in CONVERSATIONS if c != "conv-trunc"] * 7
    bad = dict(many[20], labels=[IGNORE_INDEX] * len(many[20]["labels"]), id="the-bad-one")
    many[20] = bad
    sink = check_rows(tok, many, max_length=60, chunk_tokens=64)  # many slices of a few rows each
    assert [(v["row"], v["id"]) for v in sink.items if v["rule"] == "row_has_trained_tokens"] == [(20, "the-bad-one")]
    long_rows = {i for i, r in enumerate(many) if len(r["input_ids"]) > 60}
    assert long_rows and {v["row"] for v in sink.items if v["rule"] == "max_length"} == long_rows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_conversations_pass_and_any_label_flip_fails(tok, data):
    roles = st.sampled_from(["user", "assistant", "system", "ipython", "tool"])
    # non-empty content: an untrained assistant turn of only <|eot_id|> may legitimately flip to trained
    text = st.text(alphabet="abc xyz\n!é日", min_size=1, max_size=12)
    turns = data.draw(st.lists(st.tuples(roles, text, st.sampled_from([0, 1])), min_size=1, max_size=6))
    turns.append(("assistant", data.draw(text), 1))
    ids, labels = render(tok, turns)
    assert not check_rows(tok, [{"id": "r", "input_ids": ids, "labels": labels}]).counts
    i = data.draw(st.integers(0, len(ids) - 1))
    flipped = list(labels)
    flipped[i] = ids[i] if labels[i] == IGNORE_INDEX else IGNORE_INDEX
    assert check_rows(tok, [{"id": "r", "input_ids": ids, "labels": flipped}]).counts


# ----------------------------------------------------------------------------------------- packing


def test_packed_folder_passes_and_reports_efficiency(packed):
    result, report = audit(packed)
    assert result.exit_code == 0, result.output
    stats = report["stats"]
    assert status(report)["packing"] == "pass" and stats["packed"] and stats["conversations"] == 6
    assert stats["packing_efficiency"] == pytest.approx(stats["tokens"] / (3 * 512))
    assert "packing efficiency" in result.output


def test_packed_corruptions(packed, tmp_path, tok):
    folder = copy(packed, tmp_path)
    path = folder / "shard-000000-00.arrow"
    with pa.memory_map(str(path)) as src:
        rows = pa.ipc.open_stream(src).read_all().to_pylist()
    n0 = rows[0]["seq_lengths"][0]
    rows[0]["position_ids"][n0:] = [n0 + k for k in range(len(rows[0]["position_ids"]) - n0)]  # no restart
    rows[0]["labels"][n0] = tok.bos_id  # trains the second conversation's BOS
    write_shard(path, rows)
    refresh_manifest(folder)
    result, report = audit(folder)
    assert result.exit_code == 1
    fails = {(v["rule"], v["id"]) for v in report["violations"]}
    assert fails == {("packing", "conv-multi"), ("trained_outside_assistant", "conv-multi")}


# ------------------------------------------------------------------------------------------ verify


def test_verify_names_corrupt_and_truncated_shards(clean, tmp_path):
    folder = copy(clean, tmp_path)
    a, b = folder / "shard-000000-00.arrow", folder / "shard-000001-00.arrow"
    data = bytearray(a.read_bytes())
    data[len(data) // 2] ^= 0x01
    a.write_bytes(bytes(data))
    b.write_bytes(b.read_bytes()[:-100])
    result = CliRunner().invoke(verify_cmd, [str(folder)])
    assert result.exit_code == 1
    assert a.name in result.output and b.name in result.output
    report = verify_folder(folder)
    assert report.files_with("corrupt") == [a.name] and report.files_with("truncated") == [b.name]
    result, audit_report = audit(folder)
    assert result.exit_code == 1 and status(audit_report)["shard_integrity"] == "fail"
    assert CliRunner().invoke(verify_cmd, [str(clean)]).exit_code == 0


def test_verify_missing_and_extra(clean, tmp_path):
    folder = copy(clean, tmp_path)
    (folder / "shard-000001-00.arrow").rename(folder / "shard-000009-00.arrow")
    report = verify_folder(folder)
    assert report.files_with("missing") == ["shard-000001-00.arrow"]
    assert report.files_with("extra") == ["shard-000009-00.arrow"]
    assert not report.ok and "shard-000009-00.arrow" in report.summary_text()


def test_usage_and_io_errors_exit_2(clean, tmp_path):
    runner = CliRunner()
    for cmd in (audit_cmd, verify_cmd, inspect_cmd):
        assert runner.invoke(cmd, [str(tmp_path / "nope")]).exit_code == 2
        assert runner.invoke(cmd, [str(clean / "manifest.json")]).exit_code == 2  # not a folder
        result = runner.invoke(cmd, [str(tmp_path)])  # a folder without manifest
        assert result.exit_code == 2 and "manifest" in result.output
    (tmp_path / "manifest.json").write_text("{not json")
    assert runner.invoke(audit_cmd, [str(tmp_path)]).exit_code == 2
    assert runner.invoke(audit_cmd, [str(clean), "--min-trained-fraction", "2"]).exit_code == 2
    with pytest.raises(AuditError):
        run_audit(tmp_path)


# ------------------------------------------------------------------------------ thresholds, reports


def test_thresholds_from_options_and_manifest(clean, tmp_path):
    result, report = audit(clean, "--min-trained-fraction", "0.99")
    assert result.exit_code == 1 and status(report)["min_trained_fraction"] == "fail"
    folder = copy(clean, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["pipeline"]["audit"] = {"max_rejected_fraction": 0.1}  # 3 of 9 records were rejected
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result, report = audit(folder)
    assert result.exit_code == 1 and status(report)["max_rejected_fraction"] == "fail"
    assert report["thresholds"]["max_rejected_fraction"] == 0.1
    assert audit(folder, "--max-rejected-fraction", "0.5")[0].exit_code == 0


def test_json_schema_and_junit(clean, tmp_path, tok):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    folder = copy(clean, tmp_path)
    edit_row(folder, 0, "conv-basic", lambda ids, lab: lab.__setitem__(0, tok.bos_id))
    junit = tmp_path / "audit.xml"
    result = CliRunner().invoke(audit_cmd, [str(folder), "--junit", str(junit), "--max-listed", "0"])
    assert result.exit_code == 1
    suite = ET.parse(junit).getroot()
    cases = suite.findall(".//testcase")
    assert sorted(c.get("name") for c in cases) == sorted(RULES)
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["trained_outside_assistant"]
    assert "conv-basic" in failed[0].find("failure").text and "conv-basic" in failed[0].find("failure").get("message")
    assert {c.get("name") for c in cases if c.find("skipped") is not None} >= {"packing", "source_match"}
    bad = json.loads(json.dumps(run_audit(folder).to_json()))
    jsonschema.validate(bad, SCHEMA)
    bad["rules"][0]["status"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


# --------------------------------------------------------------------------------------- inspect


def test_inspect_marks_trained_tokens_when_piped(clean, packed):
    runner = CliRunner()
    result = runner.invoke(inspect_cmd, [str(clean), "--id", "conv-basic"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "id='conv-basic'" in out and "<|begin_of_text|>|<|start_header_id|>|system|<|end_header_id|>|\\n\\n" in out
    assert "[[4|.|<|eot_id|>]]" in out and "\x1b[" not in out
    assert "[[" not in out.split("assistant")[0].split("legend")[1].split("\n", 1)[1]  # nothing trained before
    by_index = runner.invoke(inspect_cmd, [str(clean), "--index", "3"])
    assert "id='conv-unicode'" in by_index.output and "こんにちは" in by_index.output
    colored = runner.invoke(inspect_cmd, [str(clean), "--index", "0", "--color"])
    assert "\x1b[" in colored.output
    inner = runner.invoke(inspect_cmd, [str(packed), "--id", "conv-multi"])
    assert "── conversation 1: conv-multi ──" in inner.output
    assert runner.invoke(inspect_cmd, [str(clean), "--id", "missing"]).exit_code == 2


# ---------------------------------------------------------------------------------------- sources


def test_source_comparison(clean, rows, monkeypatch, tmp_path):
    source = tmp_path / "data.jsonl"
    source.write_text("{}\n")
    fake = types.ModuleType("sftdata.process.rerender")
    monkeypatch.setitem(sys.modules, "sftdata.process.rerender", fake)
    rendered = {cid: (list(r["input_ids"]), list(r["labels"])) for cid, r in rows.items()}
    fake.render_source_rows = lambda paths, manifest: ((cid, i, lab) for cid, (i, lab) in rendered.items())
    result, report = audit(clean, "--source", str(source))
    assert result.exit_code == 0 and status(report)["source_match"] == "pass"
    rendered["conv-tool"][1][-1] = IGNORE_INDEX
    del rendered["conv-long"]
    result, report = audit(clean, "--source", str(source))
    assert result.exit_code == 1
    assert {v["id"] for v in report["violations"] if v["rule"] == "source_match"} == {"conv-tool", "conv-long"}
    [tool] = [v for v in report["violations"] if v["id"] == "conv-tool"]
    assert tool["position"] == len(rows["conv-tool"]["input_ids"]) - 1
    assert "token '<|eot_id|>' (id 128009): stored trained, ours masked" in tool["message"]


# ------------------------------------------------------------------------------------------- html


def _chromium() -> str | None:
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")


def test_html_is_self_contained(clean, tmp_path, tok):
    folder = copy(clean, tmp_path)
    edit_row(folder, 1, "conv-long", lambda ids, lab: lab.__setitem__(1, ids[1]))
    page = tmp_path / "audit.html"
    assert CliRunner().invoke(audit_cmd, [str(folder), "--html", str(page)]).exit_code == 1
    html = page.read_text()
    assert "<script" not in html and "https://" not in html and "<link" not in html
    assert html.count("<svg") - html.count('id="plan-padding"') == 4 and 'id="length-histogram"' in html
    assert 'data-id="conv-long"' in html and 'data-id="conv-basic"' in html
    assert "&lt;|start_header_id|&gt;" in html and 'class="t1 tr"' in html
    # named categories are horizontal bars, one line each: every reason and role labelled in full
    rejected = run_audit(folder).stats["records"]["rejected"]
    chart = html[html.index('id="rejections"'):]
    chart = chart[:chart.index("</svg>")]
    assert rejected and chart.count('class="bar"') == len(rejected)
    assert all(f">{reason}</text>" in chart and f">{n:,}</text>" in chart for reason, n in rejected.items())


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed")
def test_html_renders_in_headless_chromium(clean, tmp_path):
    page = tmp_path / "audit.html"
    assert CliRunner().invoke(audit_cmd, [str(clean), "--html", str(page)]).exit_code == 0
    shot, profile = tmp_path / "shot.png", tmp_path / "profile"
    common = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={profile}", "--window-size=1200,2000"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90)
    assert 'id="length-histogram"' in dom.stdout and "<rect" in dom.stdout
    assert 'class="sample" data-id="conv-basic"' in dom.stdout and "OK: every rule holds" in dom.stdout
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=90)
    assert shot.is_file() and shot.stat().st_size > 20_000
    if os.environ.get("SFTDATA_KEEP_SHOT"):
        shutil.copy(shot, os.environ["SFTDATA_KEEP_SHOT"])


# ------------------------------------------------------------------------------- real pipeline


def test_audit_of_real_pipeline_output(tmp_path):
    """When the pipeline is importable: its output passes, truncated and last-assistant runs included."""
    runner = pytest.importorskip("sftdata.runner")
    config = pytest.importorskip("sftdata.config")
    records = [{"id": cid, "messages": [{"role": t[0], "content": t[1], **({"weight": t[2]} if len(t) > 2 else {})}
                                        for t in turns]}
               for cid, turns in CONVERSATIONS.items() if cid != "conv-tool"]
    try:
        from tests.synth import generate_records

        records += generate_records(120, seed=5, hostile=True)
    except ImportError:
        pass
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    runs = {"llama3.1": {"max_length": 128, "truncation": "truncate"}, "llama3": {"train_on": "last_assistant"},
            "llama3.2": {}}
    for template, extra in runs.items():
        settings = config.settings_from_dict({}, overrides={"template": template, **extra})
        settings.audit_enabled = False
        out = tmp_path / template
        runner.run_pipeline(settings, [str(source)], out, workers=1)
        result, report = audit(out)
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        assert report["stats"]["rows"] == manifest["totals"]["rows"] > 0
        assert report["stats"]["truncated_rows"] == manifest["counts"]["truncated_records"]
        assert verify_folder(out).ok
    assert report["stats"]["turns_per_role"]["unknown"] == 0
