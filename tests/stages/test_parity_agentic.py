"""Parity for the rest of the Llama-3.1 format: built-in tools, `<|python_tag|>`, `<|eom_id|>`,
tools in the system message, `custom_tools`, and the `llama3.3` name.

The reference is the official Jinja template (the copies in `trl/chat_templates`) rendered by
`transformers.apply_chat_template` with the same keyword arguments a user would pass
(`builtin_tools=...`, `tools_in_user_message=False`, `custom_tools=...`, `date_string`), built
from the raw record, and tokenised by a separate transformers tokenizer. Labels are derived from
the template too: a trained assistant turn is the text the template adds after the generation
prompt of the conversation before it, so every token and every label is compared.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.constants import IGNORE_INDEX
from sftdata.stages.encode import PieceEncoder
from sftdata.stages.records import Reject
from sftdata.stages.render import Llama3Renderer, Template, official_template_text
from sftdata.stages.validate import check_schema, to_conversation
from tests.synth_agentic import generate_agentic_records

DATE = "26 Jul 2024"
PIPELINE_BUILTIN = ("brave_search", "wolfram_alpha")
BUILTIN_ALL = ("brave_search", "wolfram_alpha", "code_interpreter")
# (template, tools_in_user_message, the pipeline's builtin_tools): each knob on and off, every name
CASES = [(t, tiu, ()) for t in ("llama3.1", "llama3.2", "llama3.3") for tiu in (True, False)]
CASES += [(t, tiu, PIPELINE_BUILTIN) for t in ("llama3.1", "llama3.3") for tiu in (True, False)]


def raw_messages(rec: dict) -> list[dict]:
    """The messages as the template sees them: only string arguments decoded, as in test_parity."""
    messages = copy.deepcopy(rec["messages"])
    for m in messages:
        for call in m.get("tool_calls") or []:
            if isinstance(call["function"]["arguments"], str):
                call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return messages


def template_kwargs(rec: dict, tiu: bool, default: tuple[str, ...]) -> dict:
    kw: dict = {"date_string": DATE, "tools": rec.get("tools") or None}
    if rec.get("custom_tools"):
        kw["custom_tools"] = rec["custom_tools"]
    builtin = rec["builtin_tools"] if rec.get("builtin_tools") is not None else list(default)
    if builtin:
        kw["builtin_tools"] = builtin
    if not tiu:
        kw["tools_in_user_message"] = False
    return kw


def reference(hf, rec: dict, template: str, tiu: bool, default: tuple[str, ...]) -> tuple[str, list[tuple[str, str]]]:
    """The official text, and per trained assistant turn (prefix ending in its header, turn text)."""
    messages, kw = raw_messages(rec), template_kwargs(rec, tiu, default)
    jinja = official_template_text(template)

    def render(msgs, gen=False):
        return hf.apply_chat_template(msgs, chat_template=jinja, tokenize=False, add_generation_prompt=gen, **kw)

    full = render(messages)
    turns = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and m.get("weight", 1) != 0:
            prefix, upto = render(messages[:i], gen=True), render(messages[: i + 1])
            assert upto.startswith(prefix) and full.startswith(upto)
            turns.append((prefix, upto[len(prefix):]))
    return full, turns


def reference_row(hf, rec: dict, template: str, tiu: bool, default: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """Official ids, and labels: the ids of each trained turn's text where that text begins."""
    text, turns = reference(hf, rec, template, tiu, default)
    want = hf.encode(text, add_special_tokens=False)
    labels = [IGNORE_INDEX] * len(want)
    for prefix, turn in turns:
        start = len(hf.encode(prefix, add_special_tokens=False))
        span = hf.encode(turn, add_special_tokens=False)
        assert want[start:start + len(span)] == span
        labels[start:start + len(span)] = span
    return want, labels


def ours(tokenizer, rec: dict, template: str, tiu: bool, default: tuple[str, ...]):
    check_schema(rec)
    conv = to_conversation(rec, source="t", line=1, template=template, builtin_default=default,
                           tools_in_user_message=tiu)
    enc = PieceEncoder(tokenizer, 1 << 20).encode(Llama3Renderer(template, DATE, tools_in_user_message=tiu).render(conv))
    return conv, enc.input_ids.tolist(), enc.labels.tolist()


def _structure(rec: dict, builtin: set[str]) -> dict[str, int]:
    """Control tokens the template structure emits: one BOS, a header per turn, a closer per turn."""
    msgs = rec["messages"][1:] if rec["messages"][0]["role"] == "system" else rec["messages"]
    calls = [m["tool_calls"][0]["function"]["name"] for m in msgs if m.get("tool_calls")]
    eom = len(calls) if builtin else 0
    return {"<|begin_of_text|>": 1, "<|start_header_id|>": 1 + len(msgs), "<|end_header_id|>": 1 + len(msgs),
            "<|eom_id|>": eom, "<|eot_id|>": 1 + len(msgs) - eom,
            "<|python_tag|>": sum(name in builtin for name in calls)}


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return generate_agentic_records(160, seed=20)


@pytest.fixture(scope="module")
def hostile_corpus() -> list[dict]:
    return generate_agentic_records(120, seed=21, hostile=True)


@pytest.mark.parametrize("template,tiu,default", CASES)
def test_ids_and_labels_equal_the_official_template(template, tiu, default, corpus, tokenizer, hf_reference):
    compared = rejected = eom_trained = tags = 0
    for rec in corpus:
        builtin = rec["builtin_tools"] if rec.get("builtin_tools") is not None else list(default)
        try:
            conv, ids, labels = ours(tokenizer, rec, template, tiu, default)
        except Reject as r:  # only 3.2 refuses, and only records that ask for built-in tools
            assert template == "llama3.2" and builtin and r.reason == "template_unsupported", (rec["id"], r.reason)
            assert r.pointer == "/builtin_tools"
            rejected += 1
            continue
        want, want_labels = reference_row(hf_reference, rec, template, tiu, default)
        assert ids == want, f"{template} tiu={tiu}: ids differ for {rec['id']}"
        assert labels == want_labels, f"{template} tiu={tiu}: labels differ for {rec['id']}"
        eom_trained += sum(lab == tokenizer.eom_id for lab in labels)
        tags += sum(lab == tokenizer.python_tag_id for lab in labels)
        compared += 1
    if template == "llama3.2":
        assert compared >= 40 and rejected >= 40
    else:
        assert compared == len(corpus) and eom_trained > 50 and tags > 30  # the new tokens were reached, and trained


@pytest.mark.parametrize("template,tiu,default", [c for c in CASES if c[0] != "llama3.2" or not c[2]])
def test_hostile_text_in_code_and_results_stays_text(template, tiu, default, hostile_corpus, tokenizer,
                                                     hf_reference):
    """`<|eot_id|>` in code, queries or tool results: the official text, but only structural control tokens."""
    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
                "<|python_tag|>"]
    hostile = 0
    for rec in hostile_corpus:
        builtin = rec["builtin_tools"] if rec.get("builtin_tools") is not None else list(default)
        if template == "llama3.2" and builtin:
            continue
        conv, ids, labels = ours(tokenizer, rec, template, tiu, default)
        text, turns = reference(hf_reference, rec, template, tiu, default)
        assert tokenizer.decode(ids) == text
        want = _structure(rec, set(builtin))
        got = {name: ids.count(tokenizer.token_id(name)) for name in specials}
        assert got == want, rec["id"]
        assert sum(i >= 128000 for i in ids) == sum(want.values())  # no other control token anywhere
        trained_runs, run = [], []
        for i, lab in zip(ids, labels, strict=True):
            if lab != IGNORE_INDEX:
                run.append(i)
            elif run:
                trained_runs.append(run)
                run = []
        trained_runs += [run] if run else []
        assert [tokenizer.decode(r) for r in trained_runs] == [t for _, t in turns]
        hostile += conv.has_special_text
    assert hostile > 30


def test_llama3_3_is_the_3_1_format_under_its_own_name(corpus, tokenizer):
    assert Template.parse("llama-3.3") is Template.parse("llama3_3") is Template.LLAMA3_3
    assert official_template_text("llama3.3") == official_template_text("llama3.1")
    for rec in corpus[:40]:
        assert ours(tokenizer, rec, "llama3.3", True, ())[1:] == ours(tokenizer, rec, "llama3.1", True, ())[1:]
    fp = {t: Llama3Renderer(t, DATE).fingerprint() for t in ("llama3.1", "llama3.2", "llama3.3")}
    assert len(set(fp.values())) == 3
    assert Llama3Renderer("llama3.1", DATE, tools_in_user_message=False).fingerprint() != fp["llama3.1"]


def test_official_3_2_template_ignores_builtin_tools(corpus, hf_reference):
    """Why 3.2 rejects built-in tools: its template renders them as if they were not there."""
    jinja = official_template_text("llama3.2")
    differ = 0
    for rec in corpus:
        if not rec.get("builtin_tools"):
            continue
        kw = template_kwargs(rec, True, ())
        with_builtin = hf_reference.apply_chat_template(raw_messages(rec), chat_template=jinja, tokenize=False, **kw)
        kw.pop("builtin_tools")
        assert hf_reference.apply_chat_template(raw_messages(rec), chat_template=jinja, tokenize=False,
                                                **kw) == with_builtin
        assert "<|eom_id|>" not in with_builtin and "Tools: " not in with_builtin
        differ += 1
    assert differ > 40


@pytest.mark.slow
@pytest.mark.parametrize("template,tiu,default", [("llama3.3", False, PIPELINE_BUILTIN), ("llama3.1", True, BUILTIN_ALL),
                                                  ("llama3.2", False, ())])
def test_shared_corpus_under_the_knobs(template, tiu, default, shared_corpus, tokenizer, hf_reference):
    """The real corpus with a pipeline's built-in tools (every call turn then closes with eom) or
    tools in the system message: every id, and every label of the records with tools."""
    with_tools = 0
    for rec in shared_corpus:
        _, ids, labels = ours(tokenizer, rec, template, tiu, default)
        if rec.get("tools"):
            assert (ids, labels) == reference_row(hf_reference, rec, template, tiu, default), rec["id"]
            with_tools += 1
            continue
        text = hf_reference.apply_chat_template(raw_messages(rec), chat_template=official_template_text(template),
                                                tokenize=False, **template_kwargs(rec, tiu, default))
        assert ids == hf_reference.encode(text, add_special_tokens=False), rec["id"]
    assert with_tools >= 150


_VALUES = st.lists(st.sampled_from(list('ab Zé日 "\'\\\n\t{}()=,.') + ["<|eot_id|>", "<|python_tag|>", "\r\n"]),
                   max_size=14).map("".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(builtin=st.lists(st.sampled_from(BUILTIN_ALL + ("photo_gen",)), min_size=1, max_size=4, unique=True),
       args=st.dictionaries(st.from_regex(r"[a-z_]{1,6}", fullmatch=True), _VALUES, max_size=3),
       which=st.integers(0, 3), tiu=st.booleans(), template=st.sampled_from(["llama3.1", "llama3.3"]))
def test_any_builtin_call_renders_as_the_template(builtin, args, which, tiu, template, tokenizer, hf_reference):
    """Quotes, backslashes, newlines, CRLF and control-token text in argument values: the same text as
    the official template (it escapes nothing), and the same ids wherever no control-token text occurs."""
    name = builtin[which % len(builtin)]
    rec = {"builtin_tools": builtin, "messages": [
        {"role": "user", "content": "Go."},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function",
                                                              "function": {"name": name, "arguments": args}}]},
        {"role": "ipython", "content": "ok"}, {"role": "assistant", "content": "Done."}]}
    conv, ids, labels = ours(tokenizer, rec, template, tiu, ())
    text, turns = reference(hf_reference, rec, template, tiu, ())
    assert tokenizer.decode(ids) == text
    if not conv.has_special_text:
        assert (ids, labels) == reference_row(hf_reference, rec, template, tiu, ())
    assert ids.count(tokenizer.python_tag_id) == 1 and ids.count(tokenizer.eom_id) == 1
