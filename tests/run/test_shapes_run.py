"""Issue 32 end to end: unknown keys counted in the summary and the manifest (the same bytes for any
--workers), --strict-keys on run and validate, the new shapes read by ``auto``, and refusals that
name the flags which would read a file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sftdata.cli import main
from sftdata.config import settings_from_dict
from sftdata.errors import UnusableRunError
from sftdata.runner import run_pipeline
from sftdata.summary import format_run_summary
from tests.conftest import write_jsonl
from tests.synth import generate_records


def settings(**kw):
    s = settings_from_dict({}, overrides=kw)
    s.audit_enabled = False
    return s


def _with_keys(records: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """Records with extra keys on some (record and message level), and the counts expected."""
    want: dict[str, int] = {}
    for i, rec in enumerate(records):
        if i % 3 == 0:
            rec["source"] = "web"
            want["/source"] = want.get("/source", 0) + 1
        if i % 5 == 0:
            rec["messages"][-1]["annotation"] = {"quality": i}
            rec["messages"][0]["annotation"] = None  # twice in one record: counted once
            want["/messages/*/annotation"] = want.get("/messages/*/annotation", 0) + 1
    return records, want


def test_unknown_keys_are_in_the_manifest_and_the_summary_for_any_workers(tmp_path):
    records, want = _with_keys(generate_records(400, seed=3, tools=False))
    src = write_jsonl(tmp_path / "a.jsonl", records)
    outs = []
    for w in (1, 2):
        out = tmp_path / f"w{w}"
        manifest = run_pipeline(settings(chunk_size=16 << 10), [str(src)], out, workers=w).manifest
        assert manifest["chunks"] > 3
        assert manifest["counts"]["unknown_keys"] == dict(sorted(want.items()))
        outs.append(out)
    assert (outs[0] / "manifest.json").read_bytes() == (outs[1] / "manifest.json").read_bytes()
    text = format_run_summary(manifest)
    assert "unknown keys" in text and "/messages/*/annotation" in text and "--strict-keys" in text


def test_strict_keys_quarantines_them(tmp_path):
    records, want = _with_keys(generate_records(60, seed=4, tools=False))
    src = write_jsonl(tmp_path / "a.jsonl", records)
    manifest = run_pipeline(settings(strict_keys=True), [str(src)], tmp_path / "o").manifest
    flagged = sum(1 for i in range(60) if i % 3 == 0 or i % 5 == 0)
    assert manifest["counts"]["rejected"] == {"unknown_key": flagged}
    assert manifest["counts"]["unknown_keys"] == {}
    assert manifest["pipeline"]["strict_keys"] is True


def test_strict_keys_flag_on_validate_and_run(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                           {"role": "assistant", "content": "a"}], "meta": 1}])
    runner = CliRunner()
    res = runner.invoke(main, ["validate", str(src)])
    assert res.exit_code == 0 and "unknown keys, not rendered" in res.output and "/meta (1)" in res.output
    res = runner.invoke(main, ["validate", str(src), "--strict-keys"])
    assert res.exit_code == 1 and "[unknown_key] /meta" in res.output
    res = runner.invoke(main, ["run", "--input", str(src), "--output", str(tmp_path / "o"), "--strict-keys",
                               "--no-audit"])
    assert res.exit_code == 1 and "unknown_key 1" in res.output


def test_auto_reads_every_new_shape_in_its_own_file(tmp_path):
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    files = {
        "list.jsonl": [conv, conv],
        "swift.jsonl": [{"query": "q", "response": "a", "history": [["q0", "a0"]]}],
        "capybara.jsonl": [{"source": "x", "conversation": [{"input": "q", "output": "a"}]}],
        "oasst.jsonl": [{"message_tree_id": "t", "prompt": {"message_id": "m", "role": "prompter", "text": "q",
                                                             "replies": [{"role": "assistant", "text": "a"}]}}],
        "legacy.jsonl": [{"messages": conv[:1] + [{"role": "assistant", "content": None,
                                                   "function_call": {"name": "f", "arguments": "{}"}},
                                                  {"role": "function", "name": "f", "content": "ok"},
                                                  conv[1]],
                          "functions": [{"name": "f", "parameters": {"type": "object"}}]}],
    }
    paths = [str(write_jsonl(tmp_path / name, recs)) for name, recs in files.items()]
    manifest = run_pipeline(settings(input_format="auto", template="llama3.1"), paths, tmp_path / "o").manifest
    assert {i["name"]: i["format"] for i in manifest["inputs"]} == {
        "capybara.jsonl": "pairs", "legacy.jsonl": "openai_functions", "list.jsonl": "message_list",
        "oasst.jsonl": "oasst_tree", "swift.jsonl": "query_response"}
    assert manifest["counts"]["rejected"] == {} and manifest["totals"]["rows"] == 6
    assert manifest["counts"]["unknown_keys"] == {"/source": 1}


@pytest.mark.parametrize("records,flags", [
    ([{"dialog": [{"speaker": "user", "text": "q"}, {"speaker": "assistant", "text": "a"}]}],
     "--input-format messages --field messages=dialog --field role=speaker --field content=text"),
    ([{"question": "q", "answer": "a"}], "--input-format alpaca --field instruction=question --field output=answer"),
    ([[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]], "--input-format message_list"),
    ([{"query": "q", "response": "a"}], "--input-format query_response"),
    ([{"weird": 1}], "no adapter reads this shape"),
])
def test_a_file_rejected_whole_for_its_shape_names_the_flags_that_read_it(records, flags, tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", records)
    with pytest.raises(UnusableRunError) as exc:
        run_pipeline(settings(), [str(src)], tmp_path / "o")  # read as messages, the default
    assert flags in str(exc.value) and "\n" not in str(exc.value)
    if flags.startswith("--"):  # and the flags do read it
        fields = dict(f.split("=") for f in flags.split(" --field ")[1:])
        fmt = flags.split()[1]
        manifest = run_pipeline(settings(input_format=fmt, fields=fields or None), [str(src)], tmp_path / "p").manifest
        assert manifest["totals"]["rows"] == 1


def test_validate_hint_names_the_flags(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"question": "q", "answer": "a"}])
    res = CliRunner().invoke(main, ["validate", str(src)])
    assert res.exit_code == 1
    assert "--input-format alpaca --field instruction=question --field output=answer" in res.output


def test_a_legacy_record_under_llama3_is_template_unsupported(tmp_path):
    rec = {"functions": [{"name": "f"}], "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": {}}},
        {"role": "function", "name": "f", "content": json.dumps({"r": 1})},
        {"role": "assistant", "content": "a"}]}
    src = write_jsonl(tmp_path / "a.jsonl", [rec, {"messages": rec["messages"][:1] + rec["messages"][3:]}])
    manifest = run_pipeline(settings(template="llama3"), [str(src)], tmp_path / "o").manifest
    assert manifest["counts"]["rejected"] == {"template_unsupported": 1}


def test_text_beside_a_function_call_is_refused_not_written_without_the_call(tmp_path):
    """The issue's file: "Sure, I will search..." beside a function_call, read as messages. It used to
    be written with the call and the tool list gone; the official template drops text beside a call,
    so the record is refused with that reason, as its modern equivalent is."""
    rec = {"functions": [{"name": "search", "parameters": {"type": "object"}}], "messages": [
        {"role": "user", "content": "find cats"},
        {"role": "assistant", "content": "Sure, I will search for cats.",
         "function_call": {"name": "search", "arguments": '{"q": "cats"}'}},
        {"role": "tool", "content": '{"results": ["cat"]}'},
        {"role": "assistant", "content": "Here are cats."}]}
    src = write_jsonl(tmp_path / "a.jsonl", [rec])
    for fmt in ("messages", "auto"):
        manifest = run_committed_manifest(settings(input_format=fmt), src, tmp_path / fmt)
        assert manifest["counts"]["rejected"] == {"content_with_tool_calls": 1}, fmt


def run_committed_manifest(s, src, out) -> dict:
    from tests.conftest import run_committed

    return run_committed(s, [str(src)], out)


def _tree() -> dict:
    def node(text, role, *replies, **kw):
        return {"role": role, "text": text, "replies": list(replies), **kw}

    return {"message_tree_id": "t", "prompt": node("q", "prompter",
        node("a1", "assistant", node("q2", "prompter", node("a2", "assistant")), rank=1),
        node("a3", "assistant", rank=0),
        node("gone", "assistant", deleted=True),
        node("a4", "assistant", node("q4", "moderator")))}


def test_tree_paths_all_gives_a_row_per_path_and_keeps_the_accounting(tmp_path):
    from sftdata.audit.run import run_audit
    from sftdata.config import ConfigError
    from sftdata.process.rerender import render_source_rows

    src = write_jsonl(tmp_path / "trees.jsonl", [_tree()])
    best = run_pipeline(settings(input_format="oasst_tree"), [str(src)], tmp_path / "best").manifest
    assert (best["counts"]["records_read"], best["totals"]["rows"]) == (1, 1)
    out = tmp_path / "all"
    manifest = run_pipeline(settings(input_format="oasst_tree", tree_paths="all"), [str(src)], out).manifest
    assert manifest["counts"]["records_read"] == 3 and manifest["totals"]["rows"] == 2  # a path is a record
    assert manifest["counts"]["rejected"] == {"unknown_role": 1}
    quarantined = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [(q["id"], q["line"], q["pointer"]) for q in quarantined] == [("t/2", 1, "/prompt/replies/3/replies/0/role")]
    import datasets

    rows = datasets.load_from_disk(str(out))
    assert rows["id"] == ["t/0", "t/1"]
    assert run_audit(str(out)).ok
    assert [r[0] for r in render_source_rows([str(src)], manifest)] == ["t/0", "t/1"]
    with pytest.raises(ConfigError, match="tree_paths"):
        settings(tree_paths="all", dedupe="exact")
