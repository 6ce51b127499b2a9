"""Token-for-token parity with the official Llama-3 / 3.1 / 3.2 templates rendered by transformers.

The reference is `apply_chat_template` with the Jinja templates shipped inside `trl`, tokenised by
a separate transformers tokenizer without adding special tokens. Records whose content holds
special-token text are compared differently (below): there the official path turns text into
control tokens, which is exactly the bug we refuse to reproduce.
"""

from __future__ import annotations

import pytest

from sftdata.constants import IGNORE_INDEX
from sftdata.stages.encode import PieceEncoder
from sftdata.stages.records import Reject
from sftdata.stages.render import Llama3Renderer, official_template_text, to_template_messages
from sftdata.stages.validate import check_schema, to_conversation
from tests.synth import generate_records

TEMPLATES = ["llama3", "llama3.1", "llama3.2"]
DATE = "26 Jul 2024"


def raw_reference(rec: dict) -> tuple[list[dict], list | None]:
    """The record as the official template sees it, built from the raw JSON, not from our parser.

    Only the documented boundary normalisations are applied, written out independently here:
    arguments given as a JSON string are decoded, and an empty tool list means no tools.
    """
    import copy
    import json

    messages = copy.deepcopy(rec["messages"])
    for m in messages:
        for call in m.get("tool_calls") or []:
            if isinstance(call["function"]["arguments"], str):
                call["function"]["arguments"] = json.loads(call["function"]["arguments"])
        if not m.get("tool_calls"):
            m.pop("tool_calls", None)
    return messages, rec.get("tools") or None


def reference_ids(hf, rec: dict, template: str) -> list[int]:
    messages, tools = raw_reference(rec)
    text = hf.apply_chat_template(messages, tools=tools, chat_template=official_template_text(template),
                                  tokenize=False, date_string=DATE)
    return hf.encode(text, add_special_tokens=False)


def compare_corpus(records, template, tokenizer, hf) -> tuple[int, int]:
    renderer = Llama3Renderer(template, DATE)
    encoder = PieceEncoder(tokenizer, 1 << 20)
    compared = skipped = 0
    for i, rec in enumerate(records):
        check_schema(rec)
        try:
            conv = to_conversation(rec, source="t", line=i, template=template)
        except Reject as r:  # llama3 cannot render tools: skipped, never silently "passed"
            assert template == "llama3" and r.reason == "template_unsupported", (rec.get("id"), r.reason)
            skipped += 1
            continue
        ours = encoder.encode(renderer.render(conv))
        want = reference_ids(hf, rec, template)
        assert ours.input_ids.tolist() == want, f"{template}: ids differ for {rec.get('id')}"
        compared += 1
    return compared, skipped


@pytest.mark.parametrize("template", TEMPLATES)
def test_parity_generated_corpus(template, tokenizer, hf_reference):
    records = generate_records(400, seed=11, tools=True)
    compared, skipped = compare_corpus(records, template, tokenizer, hf_reference)
    assert compared >= (200 if template == "llama3" else 400)


@pytest.mark.slow
@pytest.mark.parametrize("template", TEMPLATES)
def test_parity_shared_corpus(template, tokenizer, hf_reference, shared_corpus):
    compared, skipped = compare_corpus(shared_corpus, template, tokenizer, hf_reference)
    assert compared + skipped == len(shared_corpus)
    assert compared >= 2500


@pytest.mark.parametrize("template", TEMPLATES)
def test_hostile_text_stays_text(template, tokenizer, hf_reference):
    """Content with `<|eot_id|>` etc.: same text as the official render, but no control token from content.

    Decoding our ids gives exactly the official rendered string, and the control tokens we emit
    are exactly those the template structure has (count of headers and eots per message).
    """
    records = [r for r in generate_records(300, seed=5, tools=True, hostile=True)]
    renderer = Llama3Renderer(template, DATE)
    encoder = PieceEncoder(tokenizer, 1 << 20)
    hostile = 0
    for i, rec in enumerate(records):
        try:
            conv = to_conversation(rec, source="t", line=i, template=template)
        except Reject:
            continue
        ours = encoder.encode(renderer.render(conv)).input_ids.tolist()
        text = hf_reference.apply_chat_template(to_template_messages(conv.messages), tools=conv.tools,
                                                chat_template=official_template_text(template), tokenize=False,
                                                date_string=DATE)
        assert tokenizer.decode(ours) == text
        n_turns = len(conv.messages) + (0 if template == "llama3" else 1 - (conv.messages[0].role == "system"))
        assert ours.count(tokenizer.start_header_id) == n_turns
        assert ours.count(tokenizer.eot_id) == n_turns
        assert ours.count(tokenizer.bos_id) == 1 and ours[0] == tokenizer.bos_id
        hostile += conv.has_special_text
    assert hostile > 20


def test_labels_cover_exactly_assistant_content_and_eot(tokenizer):
    rec = {"messages": [
        {"role": "system", "content": "  Be terse. "},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "weight": 0},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": " Bye. "},
    ]}
    conv = to_conversation(rec, source="t", line=1, template="llama3.2")
    enc = PieceEncoder(tokenizer, 4096).encode(Llama3Renderer("llama3.2", DATE).render(conv))
    ids, labels = enc.input_ids.tolist(), enc.labels.tolist()
    trained = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert trained == tokenizer.encode_text("Bye.") + [tokenizer.eot_id]
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(ids, labels, strict=True))
    # last_assistant on a record whose last turn is trainable trains the same tokens
    enc2 = PieceEncoder(tokenizer, 4096).encode(Llama3Renderer("llama3.2", DATE, "last_assistant").render(conv))
    assert enc2.labels.tolist() == labels
    rec["messages"][2]["weight"] = 1
    conv = to_conversation(rec, source="t", line=1, template="llama3.2")
    both = PieceEncoder(tokenizer, 4096).encode(Llama3Renderer("llama3.2", DATE).render(conv))
    last = PieceEncoder(tokenizer, 4096).encode(Llama3Renderer("llama3.2", DATE, "last_assistant").render(conv))
    assert both.trained == len(tokenizer.encode_text("Hello!")) + len(tokenizer.encode_text("Bye.")) + 2
    assert last.trained == len(tokenizer.encode_text("Bye.")) + 1


def test_date_is_a_setting_not_the_clock(tokenizer):
    conv = to_conversation({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
                           source="t", line=1, template="llama3.2")
    enc = PieceEncoder(tokenizer, 4096)
    default = tokenizer.decode(enc.encode(Llama3Renderer("llama3.2", DATE).render(conv)).input_ids.tolist())
    other = tokenizer.decode(enc.encode(Llama3Renderer("llama3.2", "01 Jan 2025").render(conv)).input_ids.tolist())
    assert "Today Date: 26 Jul 2024" in default and "Today Date: 01 Jan 2025" in other
