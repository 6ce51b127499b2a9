"""One contract for every input format: the registry is the only place that knows the formats."""

from __future__ import annotations

import pytest

from sftdata.cli_options import INPUT_FORMATS
from sftdata.config import settings_from_dict
from sftdata.process.record import RecordProcessor
from sftdata.stages.adapt import ADAPTERS, Adapter, adapt, looks_like
from sftdata.stages.records import Conversation, Message, Reject
from sftdata.stages.render import Llama3Renderer

SAMPLES = {
    "messages": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    "sharegpt": {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    "alpaca": {"instruction": "q", "output": "a"},
    "prompt_completion": {"prompt": [{"role": "user", "content": "q"}],
                          "completion": [{"role": "assistant", "content": "a"}]},
    "text": {"text": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\na<|eot_id|>"},
}


def test_the_cli_choices_are_the_registry():
    assert INPUT_FORMATS[0] == "auto" and sorted(INPUT_FORMATS[1:]) == sorted(ADAPTERS)
    assert set(SAMPLES) == set(ADAPTERS)


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_every_adapter_gives_the_same_rows_for_one_conversation(fmt, tokenizer):
    settings = settings_from_dict({"stages": {"render": {"template": "llama3"}}})  # the text sample is 3.0
    proc = RecordProcessor(settings, tokenizer)
    assert looks_like(SAMPLES[fmt]) == fmt
    conv = adapt(SAMPLES[fmt], fmt, settings, proc.renderer, "f.jsonl", 3)
    assert isinstance(conv, Conversation) and conv.id == "f.jsonl:3"
    want = proc.encode(proc.conversation(SAMPLES["messages"], "f.jsonl", 3))
    got = proc.encode(conv)
    assert got.input_ids.tolist() == want.input_ids.tolist() and got.labels.tolist() == want.labels.tolist()


def test_an_unknown_format_is_a_rejection():
    settings = settings_from_dict({})
    with pytest.raises(Reject) as exc:
        adapt({}, "csv", settings, Llama3Renderer("llama3.2", "26 Jul 2024"), "f", 1)
    assert exc.value.reason == "unsupported_format"


def test_a_new_format_is_one_registry_entry(monkeypatch):
    def convert(obj, ctx):
        return Conversation(obj["key"], [Message("user", obj["q"]), Message("assistant", obj["a"])],
                            source=ctx.source, line=ctx.line)

    monkeypatch.setitem(ADAPTERS, "qa", Adapter("qa", convert, lambda o: "q" in o and "a" in o, "q + a"))
    proc = RecordProcessor(settings_from_dict({"stages": {"read": {"fields": {"id": "uid"}}}}))
    conv = proc.conversation({"key": "k1", "q": "hi", "a": "ho"}, "x.jsonl", 9, "qa")
    assert (conv.id, conv.line, [m.content for m in conv.messages]) == ("k1", 9, ["hi", "ho"])
    assert looks_like({"uid": 1, "q": "x", "a": "y"}) == "qa"
