"""`text` and prompt/completion records give the ids and labels of the equivalent `messages` record.

The reference for `text` is the official Jinja template (as shipped in `trl`) rendered by
transformers: every record of a corpus is rendered to a string, fed back as `{"text": ...}`, and
must encode to exactly the input_ids *and* labels of the messages path. Weights are dropped first:
a text cannot carry them.
"""

from __future__ import annotations

import copy

import pytest

from sftdata.constants import IGNORE_INDEX
from sftdata.stages.adapt import parse_chat_text, prompt_completion_pieces, prompt_completion_record, text_record
from sftdata.stages.adapt import text_to_pieces as to_pieces
from sftdata.stages.encode import PieceEncoder
from sftdata.stages.records import Reject
from sftdata.stages.render import Llama3Renderer, official_template_text, to_template_messages
from sftdata.stages.validate import check_schema, to_conversation
from tests.synth import generate_records

DATE = "26 Jul 2024"
TEMPLATES = ["llama3", "llama3.1", "llama3.2"]
U = "<|start_header_id|>user<|end_header_id|>\n\n"
A = "<|start_header_id|>assistant<|end_header_id|>\n\n"
EOT = "<|eot_id|>"


@pytest.fixture(scope="module")
def encoder(tokenizer):
    return PieceEncoder(tokenizer, 1 << 20)


def unweighted(rec: dict) -> dict:
    rec = copy.deepcopy(rec)
    for m in rec["messages"]:
        m.pop("weight", None)
    return rec


def rendered(hf, conv, template: str) -> str:
    return hf.apply_chat_template(to_template_messages(conv.messages), tools=conv.tools, tokenize=False,
                                  chat_template=official_template_text(template), date_string=DATE)


def roundtrip(records, template, tokenizer, encoder, train_on="all_assistant") -> tuple[int, int]:
    """(compared, special-text records); asserts text path == messages path on every record."""
    renderer = Llama3Renderer(template, DATE, train_on)
    compared = special = 0
    for i, rec in enumerate(records):
        rec = unweighted(rec)
        check_schema(rec)
        try:
            conv = to_conversation(rec, source="t", line=i, template=template)
        except Reject as r:  # llama3 cannot render tools: those records are skipped, never "passed"
            assert template == "llama3" and r.reason == "template_unsupported", (rec["id"], r.reason)
            continue
        want = encoder.encode(renderer.render(conv))
        got = encoder.encode(to_pieces({"text": rendered(tokenizer.hf, conv, template)}, train_on=train_on))
        assert got.input_ids.tolist() == want.input_ids.tolist(), f"{template}: ids differ for {rec['id']}"
        assert got.labels.tolist() == want.labels.tolist(), f"{template}: labels differ for {rec['id']}"
        compared += 1
        special += conv.has_special_text
    return compared, special


@pytest.mark.parametrize("template", TEMPLATES)
def test_text_roundtrip_generated_corpus(template, tokenizer, encoder):
    compared, _ = roundtrip(generate_records(400, seed=21, tools=True), template, tokenizer, encoder)
    assert compared >= (250 if template == "llama3" else 400)


@pytest.mark.parametrize("template", TEMPLATES)
def test_text_roundtrip_hostile_records(template, tokenizer, encoder):
    """Special-token text inside content stays text: only the boundary `<|eot_id|><|start_header_id|>` is structure."""
    compared, special = roundtrip(generate_records(150, seed=5, tools=True, hostile=True), template, tokenizer,
                                  encoder)
    assert compared >= 100 and special >= 20


def test_text_roundtrip_last_assistant(tokenizer, encoder):
    compared, _ = roundtrip(generate_records(100, seed=8), "llama3.2", tokenizer, encoder, "last_assistant")
    assert compared == 100


@pytest.mark.slow
@pytest.mark.parametrize("template", TEMPLATES)
def test_text_roundtrip_shared_corpus(template, tokenizer, encoder, shared_corpus):
    compared, _ = roundtrip(shared_corpus, template, tokenizer, encoder)
    assert compared >= 2500


def test_injected_turn_boundary_reads_as_structure():
    """The one ambiguous case, documented: content holding `<|eot_id|><|start_header_id|>...` splits the turn."""
    text = f"{U}hi{EOT}{U}sneaky{EOT}{A}ok{EOT}"
    assert [t.role for t in parse_chat_text(text)] == ["user", "user", "assistant"]


def test_bos_added_and_trailing_whitespace_dropped(encoder):
    body = f"{U}Hi{EOT}{A}Hello!{EOT}"
    want = encoder.encode(to_pieces({"text": "<|begin_of_text|>" + body}))
    for text in (body, "<|begin_of_text|>" + body + "\n", body + " \n\n"):
        got = encoder.encode(to_pieces({"text": text}))
        assert got.input_ids.tolist() == want.input_ids.tolist()
        assert got.labels.tolist() == want.labels.tolist()


def test_tool_call_body_trained_ipython_untrained(tokenizer, encoder):
    call = '{"name": "f", "parameters": {"x": 1}}'
    text = (f"{U}go{EOT}{A}{call}{EOT}<|start_header_id|>ipython<|end_header_id|>\n\n\"42\"{EOT}{A}It is 42.{EOT}")
    enc = encoder.encode(to_pieces({"text": text}))
    trained = tokenizer.decode([i for i, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE_INDEX])
    assert trained == f"{call}{EOT}It is 42.{EOT}"


@pytest.mark.parametrize(("text", "reason", "where"), [
    (f"<|begin_of_text|>{U}Hi{EOT}<|start_header_id|>assistant\n\nYo{EOT}", "unclosed_header", "character 71"),
    (f"{U}Hi{EOT}{A}Yo", "missing_eot", "character 54"),
    (f"{U}Hi{EOT}{A}Yo{EOT} trailing words", "missing_eot", "character 54"),
    (f"{U}Hi{EOT}<|start_header_id|>bot<|end_header_id|>\n\nYo{EOT}", "unknown_role", "character 54"),
    (f"{U}Hi{EOT}<|start_header_id|>assistant<|end_header_id|>\nYo{EOT}", "malformed_header", "character 99"),
    (f"<|begin_of_text|><|begin_of_text|>{U}Hi{EOT}{A}Yo{EOT}", "text_before_header", "character 17"),
    (f"Preface. {U}Hi{EOT}{A}Yo{EOT}", "text_before_header", "character 0"),
    (f"{U}Hi{EOT}", "no_assistant", ""),
    (f"{U}Hi{EOT}{A}  {EOT}", "empty_assistant", "character 54"),
    (f"{U}Hi{EOT}{A}<|python_tag|>x.call()<|eom_id|>"
     f"<|start_header_id|>ipython<|end_header_id|>\n\nr{EOT}", "unsupported_eom", "character"),
    ("Just prose, no chat.", "no_chat_structure", ""),
])
def test_malformed_text_rejected_with_position(text, reason, where):
    with pytest.raises(Reject) as exc:
        to_pieces({"text": text})
    assert exc.value.reason == reason, exc.value.message
    assert where in exc.value.message and exc.value.pointer == "/text"


@pytest.mark.parametrize(("obj", "reason"), [({"txt": "x"}, "missing_field"), ({"text": 3}, "wrong_type"),
                                             ([1], "not_an_object")])
def test_text_record_shape(obj, reason):
    with pytest.raises(Reject) as exc:
        to_pieces(obj)
    assert exc.value.reason == reason


def test_prose_train_all(tokenizer, encoder):
    text = "<|begin_of_text|>Once upon a time <|end_of_text|>"
    enc = encoder.encode(to_pieces({"text": text}, text_without_chat="train_all"))
    assert enc.input_ids[0] == tokenizer.bos_id and enc.labels[0] == IGNORE_INDEX
    assert enc.labels[1:].tolist() == enc.input_ids[1:].tolist()
    assert tokenizer.decode(enc.input_ids[1:].tolist()) == "Once upon a time <|end_of_text|>"
    assert tokenizer.token_id("<|end_of_text|>") not in enc.input_ids.tolist()  # text, not the control token
    with pytest.raises(Reject, match="empty"):
        to_pieces({"text": "<|begin_of_text|> "}, text_without_chat="train_all")


def test_text_record_conversation():
    conv, _ = text_record({"id": 7, "text": f"{U}say {EOT} please{EOT}{A}ok{EOT}"}, source="f.jsonl", line=3)
    assert conv.id == "7" and [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.has_special_text and [m.train for m in conv.messages] == [False, True]
    conv, _ = text_record({"text": f"{U}a{EOT}{A}b{EOT}"}, source="f.jsonl", line=3)
    assert conv.id == "f.jsonl:3"


# -- prompt / completion ------------------------------------------------------------------------------
def split_record(rec: dict) -> tuple[dict, dict]:
    """(prompt/completion record, the messages record with prompt assistants at weight 0)."""
    msgs = unweighted(rec)["messages"]
    cut = max(i for i, m in enumerate(msgs) if m["role"] == "user") + 1
    pc = {"id": rec["id"], "prompt": msgs[:cut], "completion": msgs[cut:]}
    ref = copy.deepcopy(msgs)
    for m in ref[:cut]:
        if m["role"] == "assistant":
            m["weight"] = 0
    full = {"id": rec["id"], "messages": ref}
    if "tools" in rec:
        pc["tools"] = full["tools"] = rec["tools"]
    return pc, full


@pytest.mark.parametrize("template", ["llama3.1", "llama3.2"])
def test_conversational_prompt_completion_matches_messages(template, encoder):
    renderer = Llama3Renderer(template, DATE)
    for i, rec in enumerate(generate_records(150, seed=31, tools=True)):
        pc, full = split_record(rec)
        want = encoder.encode(renderer.render(to_conversation(full, source="t", line=i, template=template)))
        got = encoder.encode(prompt_completion_pieces(pc, template=template, date_string=DATE))
        assert got.input_ids.tolist() == want.input_ids.tolist(), rec["id"]
        assert got.labels.tolist() == want.labels.tolist(), rec["id"]


def test_conversational_errors_point_at_prompt_or_completion():
    user = {"role": "user", "content": "hi"}
    cases = [({"prompt": [user], "completion": [{"role": "bot", "content": "x"}]}, "unknown_role", "/completion/0/role"),
             ({"prompt": [user, {"role": "assistant", "content": " "}], "completion": [{"role": "assistant",
               "content": "x"}]}, "empty_assistant", "/prompt/1/content"),
             ({"prompt": [user], "completion": [user]}, "no_assistant", "/completion"),
             ({"prompt": "x", "completion": [user]}, "wrong_type", "/completion"),
             ({"completion": "x"}, "missing_field", "")]
    for obj, reason, pointer in cases:
        with pytest.raises(Reject) as exc:
            prompt_completion_pieces(obj, template="llama3.2", date_string=DATE)
        assert (exc.value.reason, exc.value.pointer) == (reason, pointer), exc.value.message


def test_string_prompt_completion(tokenizer, encoder):
    def trained(obj, **kw) -> tuple[str, str]:
        enc = encoder.encode(prompt_completion_pieces(obj, template="llama3.2", date_string=DATE, **kw))
        ids, labels = enc.input_ids.tolist(), enc.labels.tolist()
        assert ids[0] == tokenizer.bos_id and ids.count(tokenizer.bos_id) == 1
        kept = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
        return tokenizer.decode(ids[1:]), tokenizer.decode(kept)

    assert trained({"prompt": "The sky is", "completion": " blue."}) == ("The sky is blue.", " blue.")
    assert trained({"prompt": "The sky is", "completion": " blue."}, completion_eos=True) == (
        "The sky is blue.<|eot_id|>", " blue.<|eot_id|>")
    # A literal trailing EOS is the control token; a literal leading BOS is the BOS.
    assert trained({"prompt": "<|begin_of_text|>Q", "completion": " A<|eot_id|>"}) == ("Q A<|eot_id|>", " A<|eot_id|>")
    _, done = trained({"prompt": "Q", "completion": " A"}, completion_eos=True, tokenizer_eos="<|end_of_text|>")
    assert done == " A<|end_of_text|>"
    with pytest.raises(Reject, match="empty"):
        prompt_completion_pieces({"prompt": "Q", "completion": " "}, template="llama3.2")


def test_rendered_chat_string_prompt(tokenizer, encoder):
    """A prompt rendered with add_generation_prompt=True is parsed, not encoded as text."""
    head = f"<|begin_of_text|>{U}Hi{EOT}{A}"
    enc = encoder.encode(prompt_completion_pieces({"prompt": head, "completion": "Hello"}, template="llama3.2",
                                                  completion_eos=True))
    want = encoder.encode(to_pieces({"text": head + "Hello" + EOT}))
    assert enc.input_ids.tolist() == want.input_ids.tolist() and enc.labels.tolist() == want.labels.tolist()
    conv, _ = prompt_completion_record({"prompt": f"{U}Hi{EOT}{A}Yo{EOT}", "completion": f"{U}x{EOT}{A}z{EOT}"},
                                       template="llama3.2")
    assert [m.train for m in conv.messages] == [False, False, False, True]
    with pytest.raises(Reject) as exc:
        prompt_completion_pieces({"prompt": f"{U}Hi{EOT}{A}Hel", "completion": f"lo{EOT}"}, template="llama3.2")
    assert exc.value.reason == "completion_boundary"
