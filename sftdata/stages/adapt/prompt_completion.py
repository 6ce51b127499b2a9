"""``{"prompt": ..., "completion": ...}`` records: TRL's prompt-completion dataset type.

Three shapes, each mapped onto the pieces the rest of the pipeline already trusts:

* **Conversational** (both lists of messages): ``prompt + completion`` is validated as one
  ``messages`` record (same schema, same rules, errors pointing at ``/prompt/i`` or
  ``/completion/j``) and rendered by ``Llama3Renderer``, with only the *completion's* assistant
  turns trained. Prompt assistant turns are few-shot context, never targets. Unlike TRL, which
  trains every token after the prompt, tool results and user turns inside a completion stay
  untrained: they are inputs the model will be given, not text it should produce.
* **Plain strings**: BOS + prompt (untrained) + completion (trained). The two are tokenized
  separately, so the boundary is always a token boundary and the model trains on the prompt ids it
  will see at inference (TRL tokenizes them jointly and can merge a token across the boundary).
  A literal leading ``<|begin_of_text|>`` in the prompt is the BOS, not text. A literal trailing
  ``tokenizer_eos`` in the completion becomes that control token, trained (writing it as text is
  how people ask for EOS); ``completion_eos=True`` adds it when it is missing, like TRL's
  ``add_eos``.
* **Rendered chat strings**: a string prompt that holds ``<|start_header_id|>`` is a conversation
  already rendered (typically ``apply_chat_template(..., add_generation_prompt=True)``). Encoding it
  as text would turn every control token into ordinary tokens, so ``prompt + completion`` is parsed
  like a ``text`` record instead, and the assistant turns that start in the completion are trained.
  The completion must start at a turn or at an assistant turn's content (``completion_boundary``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from typing import Any

from sftdata.constants import DEFAULT_DATE
from sftdata.stages.adapt.text import (
    BOS,
    EOT,
    START_HEADER,
    parse_chat_text,
    turns_conversation,
    turns_to_pieces,
)
from sftdata.stages.records import Conversation, Message, Reject
from sftdata.stages.render import SPECIAL, TEXT, TRAINED, TRAINED_SPECIAL, Llama3Renderer, Piece, Template
from sftdata.stages.validate import SPECIAL_TEXT, check_schema, to_conversation

_MESSAGE_POINTER = re.compile(r"/messages/(\d+)")


@lru_cache(maxsize=16)
def _renderer(template: str, date_string: str, train_on: str, tools_in_user_message: bool = True) -> Llama3Renderer:
    return Llama3Renderer(template, date_string, train_on, tools_in_user_message)


def _remap(r: Reject, n_prompt: int) -> Reject:
    """A rejection of the joined ``messages`` record, re-pointed at ``/prompt`` or ``/completion``."""
    def sub(m: re.Match) -> str:
        i = int(m.group(1))
        return f"/prompt/{i}" if i < n_prompt else f"/completion/{i - n_prompt}"

    bare = "/completion" if r.reason in ("no_assistant", "no_trainable_turn") else "/prompt"

    def fix(s: str) -> str:
        return _MESSAGE_POINTER.sub(sub, s).replace("/messages", bare)

    problems = [{"reason": p["reason"], "message": fix(p["message"]), "pointer": fix(p["pointer"])}
                for p in r.problems]
    return Reject(r.reason, fix(r.message), fix(r.pointer), problems)


def _conversational(obj: dict, prompt: list, completion: list, template: str, date_string: str, train_on: str,
                    source: str, line: int, parts_policy: dict[str, str] | None, builtin_default: tuple[str, ...] = (),
                    tools_in_user_message: bool = True) -> tuple[Conversation, list[Piece]]:
    rec: dict[str, Any] = {"messages": prompt + completion}
    for key in ("id", "tools", "custom_tools", "builtin_tools"):  # what a messages record may carry beside them
        if key in obj:
            rec[key] = obj[key]
    renderer = _renderer(Template.parse(template).value, date_string, train_on, tools_in_user_message)
    try:
        check_schema(rec)
        if not any(m.get("role") == "assistant" for m in completion):
            raise Reject("no_assistant", "/completion: the completion has no assistant message", "/completion")
        conv = to_conversation(rec, source=source, line=line, template=renderer.template.value,
                               parts_policy=parts_policy, builtin_default=builtin_default,
                               tools_in_user_message=tools_in_user_message)
    except Reject as r:
        raise _remap(r, len(prompt)) from None
    n = len(prompt)
    if not any(m.train for m in conv.messages[n:] if m.role == "assistant"):
        raise Reject("no_trainable_turn", "/completion: every assistant message of the completion has weight 0",
                     "/completion")
    conv.messages = [replace(m, train=False) if i < n else m for i, m in enumerate(conv.messages)]
    return conv, renderer.render(conv)


def _rendered_chat(prompt: str, completion: str, train_on: str, rid: str, source: str,
                   line: int) -> tuple[Conversation, list[Piece]]:
    text = prompt + completion
    turns = parse_chat_text(text) or []  # never None: the prompt holds a header
    boundary = len(prompt)
    edges = {t.start for t in turns} | {t.content_start for t in turns} | {len(text.rstrip())}
    if boundary not in edges:
        raise Reject("completion_boundary", f"/completion: the completion starts inside a header or a turn's "
                     f"content (character {boundary} of prompt + completion); end the prompt with "
                     "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' or after an <|eot_id|>", "/completion")
    wanted = [i for i, t in enumerate(turns) if t.role == "assistant" and t.content_start >= boundary]
    if not wanted:
        raise Reject("no_assistant", "/completion: the completion has no assistant turn", "/completion")
    for i in wanted:
        if not turns[i].content.strip():
            raise Reject("empty_assistant", f"/completion: the assistant turn at character {turns[i].start} is "
                         "empty or whitespace only", "/completion")
    keep = set(wanted) if train_on == "all_assistant" else {wanted[-1]}
    flags = [i in keep for i in range(len(turns))]
    return turns_conversation(turns, flags, rid, source, line), turns_to_pieces(turns, flags)


def _plain(prompt: str, completion: str, completion_eos: bool, tokenizer_eos: str, rid: str, source: str,
           line: int) -> tuple[Conversation, list[Piece]]:
    body = prompt[len(BOS):] if prompt.startswith(BOS) else prompt
    eos = completion_eos
    if completion.endswith(tokenizer_eos):
        completion, eos = completion[: -len(tokenizer_eos)], True
    if not completion.strip() and not eos:
        raise Reject("empty_completion", "/completion: the completion is empty or whitespace only", "/completion")
    pieces: list[Piece] = [(SPECIAL, BOS)]
    if body:
        pieces.append((TEXT, body))
    if completion:
        pieces.append((TRAINED, completion))
    if eos:
        pieces.append((TRAINED_SPECIAL, tokenizer_eos))
    special = any("<|" in s and SPECIAL_TEXT.search(s) for s in (body, completion))
    messages = [Message("user", body, "prompt", None, False), Message("assistant", completion, "completion")]
    return Conversation(rid, messages, None, source, line, special), pieces


def prompt_completion_record(obj: dict, *, template: Template | str, date_string: str = DEFAULT_DATE,
                             completion_eos: bool = False, tokenizer_eos: str = EOT,
                             train_on: str = "all_assistant", source: str = "", line: int = 0,
                             parts_policy: dict[str, str] | None = None, builtin_default: tuple[str, ...] = (),
                             tools_in_user_message: bool = True) -> tuple[Conversation, list[Piece]]:
    """A prompt/completion record as (Conversation, pieces); raises ``Reject``.

    ``template``/``date_string`` matter for conversational records only; ``completion_eos`` and
    ``tokenizer_eos`` (use ``<|end_of_text|>`` for a base model) for plain strings only.
    """
    if train_on not in ("all_assistant", "last_assistant"):
        raise ValueError(f"unknown train_on {train_on!r}")
    if not isinstance(obj, dict):
        raise Reject("not_an_object", f"a record must be a JSON object, found {type(obj).__name__}")
    for key in ("prompt", "completion"):
        if key not in obj:
            raise Reject("missing_field", f"/: {key!r} is a required property", "")
    prompt, completion = obj["prompt"], obj["completion"]
    rid = str(obj["id"]) if obj.get("id") is not None else f"{source}:{line}"
    tpl = template.value if isinstance(template, Template) else template
    if isinstance(prompt, list) and isinstance(completion, list):
        return _conversational(obj, prompt, completion, tpl, date_string, train_on, source, line, parts_policy,
                               builtin_default, tools_in_user_message)
    if not (isinstance(prompt, str) and isinstance(completion, str)):
        raise Reject("wrong_type", f"/completion: prompt is {type(prompt).__name__} and completion is "
                     f"{type(completion).__name__}; expected both strings or both lists of messages", "/completion")
    if START_HEADER in prompt:
        if completion_eos and not completion.endswith(EOT):
            completion += EOT
        return _rendered_chat(prompt, completion, train_on, rid, source, line)
    return _plain(prompt, completion, completion_eos, tokenizer_eos, rid, source, line)


def prompt_completion_pieces(obj: dict, *, template: Template | str, date_string: str = DEFAULT_DATE,
                             completion_eos: bool = False, tokenizer_eos: str = EOT,
                             train_on: str = "all_assistant",
                             parts_policy: dict[str, str] | None = None) -> list[Piece]:
    """Pieces of a prompt/completion record; ``PieceEncoder.encode`` turns them into ids and labels."""
    return prompt_completion_record(obj, template=template, date_string=date_string, completion_eos=completion_eos,
                                    tokenizer_eos=tokenizer_eos, train_on=train_on, parts_policy=parts_policy)[1]
