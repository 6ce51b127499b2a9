"""The cheap gates of ``parse_json`` decide exactly what the slow checks they stand for decide."""

from __future__ import annotations

import random
import re

import pytest

from sftdata.stages import parse


@pytest.mark.parametrize("digits", [18, 19, 20, 30])
@pytest.mark.parametrize("where", ["value", "nested", "negative"])
def test_long_integers_parse_exactly(digits, where):
    n = int("9" * digits)
    text = {"value": f'{{"n": {n}}}', "nested": f'{{"a": [1, {{"b": {n}}}], "s": "x"}}',
            "negative": f'{{"n": -{n}}}'}[where]
    obj = parse.parse_json(text.encode())
    got = {"value": lambda o: o["n"], "nested": lambda o: o["a"][1]["b"], "negative": lambda o: -o["n"]}[where](obj)
    assert type(got) is int and got == n


def test_digit_run_gate_is_the_regex():
    """The translate-and-find gate says yes exactly when a run of 19 ASCII digits is present."""
    r = random.Random(3)
    alphabet = [b"0", b"7", b"9", b" ", b"a", b".", b"-", "\u0663".encode(), "\uff11".encode(), b"e"]
    for _ in range(3000):
        raw = b"".join(r.choice(alphabet) * r.choice([1, 1, 2, 5, 19, 20]) for _ in range(r.randrange(0, 30)))
        expect = re.search(rb"\d{19,}", raw) is not None
        assert (parse._DIGIT_RUN in raw.translate(parse._DIGIT_MAP)) == expect, raw


def test_message_keeps_value_semantics():
    """``Message`` is no longer frozen (for speed) but still hashes and compares by value, and
    ``dataclasses.replace`` gives a new one (what the prompt/completion adapter relies on)."""
    from dataclasses import replace

    from sftdata.stages.records import Message

    a, b = Message("user", "hi", "user"), Message("user", "hi", "user")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    c = replace(a, train=False)
    assert c.train is False and a.train is True and c != a


def test_isspace_is_strips_emptiness_test():
    """``validate._message`` tells an empty reply by ``isspace()``: the same set as ``strip()``."""
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        assert (not (c + " " + c).strip()) == (c + " " + c).isspace(), hex(cp)


@pytest.mark.parametrize(("content", "empty"), [("\u3000\u2028\x1c", True), (" \n\t", True), ("", True),
                                                 ("\u200b", False), (" a ", False)])
def test_empty_reply_by_unicode_whitespace(content, empty):
    from sftdata.stages.records import Reject
    from sftdata.stages.validate import to_conversation

    rec = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]}
    if empty:
        with pytest.raises(Reject) as exc:
            to_conversation(rec, source="x", line=1, template="llama3.1")
        assert exc.value.reason == "empty_assistant"
    else:
        assert to_conversation(rec, source="x", line=1, template="llama3.1").messages[1].content == content


@pytest.mark.parametrize(("messages", "legacy"), [
    ([{"role": "user", "content": "q"}, {"role": "function", "name": "f", "content": "1"}], True),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}], True),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "function_call": None, "content": "a"}], False),
    (["not a message", {"role": "user", "content": "q"}], False),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], False),
])
def test_legacy_marks_anywhere_in_the_messages(messages, legacy):
    from sftdata.stages.adapt.legacy import is_legacy

    assert is_legacy({"messages": messages}) is legacy
