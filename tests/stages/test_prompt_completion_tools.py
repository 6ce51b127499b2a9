"""Conversational prompt/completion records carry built-in tools, custom_tools and the tools placement
exactly as messages records do (the same ids; only the prompt's turns are untrained)."""

from __future__ import annotations

import numpy as np
import pytest

from sftdata.config import Settings
from sftdata.process.record import RecordProcessor

CALL = {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
    "name": "brave_search", "arguments": {"query": "weather in Paris"}}}]}
RECORD = {"id": "pc-1", "builtin_tools": ["brave_search", "wolfram_alpha"],
          "custom_tools": [{"type": "function", "function": {"name": "get_time", "description": "Time now",
                                                             "parameters": {"type": "object", "properties": {}}}}]}
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
COMPLETION = [CALL, {"role": "ipython", "content": "sunny, 21C"}, {"role": "assistant", "content": "Sunny, 21C."}]


@pytest.mark.parametrize("tools_in_user_message", [True, False])
@pytest.mark.parametrize("template", ["llama3.1", "llama3.3"])
def test_prompt_completion_equals_messages_with_builtin_tools(tokenizer, template, tools_in_user_message):
    settings = Settings(template=template, tools_in_user_message=tools_in_user_message)
    proc = RecordProcessor(settings, tokenizer)
    as_messages = proc.conversation({**RECORD, "messages": PROMPT + COMPLETION}, "m.jsonl", 1, "messages")
    as_pc = proc.conversation({**RECORD, "prompt": PROMPT, "completion": COMPLETION}, "p.jsonl", 1,
                              "prompt_completion")
    assert as_pc.builtin_tools == as_messages.builtin_tools == ("brave_search", "wolfram_alpha")
    a, b = proc.encode(as_messages), proc.encode(as_pc)
    assert np.array_equal(a.input_ids, b.input_ids)
    eom = tokenizer.eom_id
    assert eom in a.input_ids.tolist()  # the built-in call turn closes with <|eom_id|>
    assert np.array_equal(a.labels, b.labels)  # the prompt holds no assistant turn here: same labels


def test_prompt_completion_builtin_tools_under_llama32_are_rejected(tokenizer):
    from sftdata.stages.records import Reject

    proc = RecordProcessor(Settings(template="llama3.2"), tokenizer)
    with pytest.raises(Reject) as err:
        proc.conversation({**RECORD, "prompt": PROMPT, "completion": COMPLETION}, "p.jsonl", 1, "prompt_completion")
    assert err.value.reason == "template_unsupported"
