"""``{"text": ...}`` records: a conversation already rendered with a Llama-3 chat template.

Why parse instead of tokenizing the string: tokenizing rendered text with special-token parsing
turns every ``<|eot_id|>`` a user typed into a control token, and says nothing about which tokens
to train. So the text is parsed back into its structure, which is exactly

    [<|begin_of_text|>] ( <|start_header_id|> ROLE <|end_header_id|> "\\n\\n" CONTENT <|eot_id|> )+

and re-emitted as pieces: control tokens only at those structural positions, content as text.
``PieceEncoder`` then gives the same ``input_ids`` *and* ``labels`` as the equivalent ``messages``
record rendered by ``Llama3Renderer`` (``tests/stages/test_text_format.py`` checks every record of two
corpora, for llama3, 3.1 and 3.2).

Decisions, each because the alternative would be silently wrong:

* **Where content ends.** At the first ``<|eot_id|>`` that is followed by ``<|start_header_id|>``
  or by the end of the text. Any other special-token string inside content is text (it is
  encoded as ordinary tokens, as in the ``messages`` path). The only ambiguous case is content
  that itself holds ``<|eot_id|><|start_header_id|>``: the rendered string is then identical to a
  real turn boundary, and it is read as one. Everything else round-trips, hostile text included.
* **BOS.** A missing leading ``<|begin_of_text|>`` is added: every row starts with exactly one BOS,
  and a text without it was usually rendered for a tokenizer that adds BOS itself. A *second* BOS
  is refused (``text_before_header``): it is the double-BOS bug, not content.
* **Verbatim content.** Nothing is trimmed. The official templates trim already, so rendered text
  round-trips; trimming here would change what the author wrote. Whitespace after the final
  ``<|eot_id|>`` is dropped (it would be an untrained tail of no use).
* **Turns.** The 3.1/3.2 system header ("Environment: ipython", "Cutting Knowledge Date", "Today
  Date") is an ordinary untrained system turn; ``ipython``/``tool`` turns are untrained; an
  assistant turn's content (a reply or a tool-call JSON) is trained with its closing ``<|eot_id|>``.
  A text cannot carry per-turn weights, so ``train_on`` alone decides: every assistant turn, or
  the last one. An empty assistant turn is refused, as in the ``messages`` path.
* **No chat structure.** A text without any ``<|start_header_id|>`` is plain prose. It is refused
  (``no_chat_structure``) unless ``text_without_chat="train_all"`` (continued pre-training): then
  it becomes BOS + the text, every token after BOS trained. Nothing is appended: ``<|end_of_text|>``
  written in the text stays text, as everywhere in this package.

Rejections carry the character offset (0-based, in the ``text`` string) and a short excerpt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sftdata.stages.records import Conversation, Message, Reject
from sftdata.stages.render import CONST, HEADER_NEWLINE, SPECIAL, TEXT, TRAINED, TRAINED_SPECIAL, Piece
from sftdata.stages.validate import SPECIAL_TEXT

BOS = "<|begin_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
EOM = "<|eom_id|>"
ROLES = ("system", "user", "assistant", "ipython", "tool")
TRAIN_ON = ("all_assistant", "last_assistant")
TEXT_WITHOUT_CHAT = ("reject", "train_all")
POINTER = "/text"

# The role runs from after <|start_header_id|> to <|end_header_id|> without crossing a newline or
# another marker: a header that hits either first never closed.
_ROLE = re.compile(r"[^<\n]*(?=<\|end_header_id\|>)")
_MESSAGE_ROLE = {"system": "system", "user": "user", "assistant": "assistant", "ipython": "tool", "tool": "tool"}
_EXCERPT = 40


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One parsed turn: its role as written, its content verbatim, where its header starts."""

    role: str
    content: str
    start: int

    @property
    def content_start(self) -> int:
        """Character offset of the content (just after the header's ``\\n\\n``)."""
        return self.start + len(START_HEADER) + len(self.role) + len(END_HEADER) + len(HEADER_NEWLINE)


def _at(text: str, pos: int) -> str:
    return f"at character {pos} ({text[pos:pos + _EXCERPT]!r})"


def _closing_eot(text: str, start: int, end: int) -> int:
    """Offset of the ``<|eot_id|>`` that ends the content starting at ``start``, or -1."""
    p = text.find(EOT, start)
    while p >= 0:
        after = p + len(EOT)
        if after >= end or text.startswith(START_HEADER, after):
            return p
        p = text.find(EOT, after)
    return -1


def parse_chat_text(text: str) -> list[ChatTurn] | None:
    """The turns of a rendered Llama-3 conversation; ``None`` when the text has no chat structure.

    Raises ``Reject`` (``text_before_header``, ``unclosed_header``, ``unknown_role``,
    ``malformed_header``, ``missing_eot``, ``unsupported_eom``) with the character offset.
    """
    if START_HEADER not in text:
        return None
    pos = len(BOS) if text.startswith(BOS) else 0
    if not text.startswith(START_HEADER, pos):
        hint = (" - a second <|begin_of_text|>: was the text tokenized with add_special_tokens=True on top "
                "of its own BOS?") if text.startswith(BOS, pos) else ""
        raise Reject("text_before_header", f"text before the first header {_at(text, pos)}{hint}", POINTER)
    end = len(text.rstrip())
    turns: list[ChatTurn] = []
    while pos < end:  # invariant: a <|start_header_id|> starts at pos
        m = _ROLE.match(text, pos + len(START_HEADER))
        if m is None:
            raise Reject("unclosed_header", f"header {_at(text, pos)} is not closed by {END_HEADER}", POINTER)
        role = m.group()
        if role not in ROLES:
            raise Reject("unknown_role", f"unknown role {role!r} in the header {_at(text, pos)}; expected one "
                         f"of {', '.join(ROLES)}", POINTER)
        body = m.end() + len(END_HEADER)
        if not text.startswith(HEADER_NEWLINE, body):
            raise Reject("malformed_header", f"the {role} header is not followed by '\\n\\n' "
                         f"{_at(text, body)}", POINTER)
        start = body + len(HEADER_NEWLINE)
        close = _closing_eot(text, start, end)
        if close < 0:
            raise Reject("missing_eot", f"the {role} turn that starts at character {pos} has no closing {EOT} "
                         f"followed by a header or the end of the text (its content starts {_at(text, start)})",
                         POINTER)
        content = text[start:close]
        eom = content.find(EOM + START_HEADER)
        if eom >= 0:
            raise Reject("unsupported_eom", f"a turn ends with {EOM} at character {start + eom} (Llama-3.1 built-in "
                         "tool mode), which the pipeline does not render", POINTER)
        turns.append(ChatTurn(role, content, pos))
        pos = close + len(EOT)
    return turns


def _check_options(train_on: str, text_without_chat: str) -> None:
    if train_on not in TRAIN_ON:
        raise ValueError(f"unknown train_on {train_on!r}; expected one of {', '.join(TRAIN_ON)}")
    if text_without_chat not in TEXT_WITHOUT_CHAT:
        raise ValueError(f"unknown text_without_chat {text_without_chat!r}; expected one of "
                         f"{', '.join(TEXT_WITHOUT_CHAT)}")


def _text_of(obj: Any) -> str:
    if not isinstance(obj, dict):
        raise Reject("not_an_object", f"a record must be a JSON object, found {type(obj).__name__}")
    if "text" not in obj:
        raise Reject("missing_field", "/: 'text' is a required property", POINTER)
    text = obj["text"]
    if not isinstance(text, str):
        raise Reject("wrong_type", f"/text: found {type(text).__name__}, expected string", POINTER)
    return text


def trained_turns(turns: list[ChatTurn], train_on: str = "all_assistant") -> list[bool]:
    """Which turns are trained; refuses a text without (or with an empty) assistant turn."""
    assistant = [i for i, t in enumerate(turns) if t.role == "assistant"]
    if not assistant:
        raise Reject("no_assistant", "the text has no assistant turn", POINTER)
    for i in assistant:
        if not turns[i].content.strip():
            raise Reject("empty_assistant", f"the assistant turn at character {turns[i].start} is empty or "
                         "whitespace only", POINTER)
    keep = set(assistant) if train_on == "all_assistant" else {assistant[-1]}
    return [i in keep for i in range(len(turns))]


def turns_to_pieces(turns: list[ChatTurn], flags: list[bool]) -> list[Piece]:
    """Pieces in the renderer's shape: role and ``\\n\\n`` as CONST, content as one span."""
    out: list[Piece] = [(SPECIAL, BOS)]
    for turn, trained in zip(turns, flags, strict=True):
        out += [(SPECIAL, START_HEADER), (CONST, turn.role), (SPECIAL, END_HEADER), (CONST, HEADER_NEWLINE)]
        if turn.content:
            out.append((TRAINED if trained else TEXT, turn.content))
        out.append((TRAINED_SPECIAL if trained else SPECIAL, EOT))
    return out


def _prose(text: str, text_without_chat: str) -> str:
    if text_without_chat != "train_all":
        raise Reject("no_chat_structure", f"the text has no {START_HEADER}: it is not a rendered Llama-3 "
                     "conversation (use text_without_chat='train_all' to train on plain text)", POINTER)
    body = text[len(BOS):] if text.startswith(BOS) else text
    if not body.strip():
        raise Reject("empty_text", "the text is empty or whitespace only", POINTER)
    return body


def text_to_pieces(obj: dict, *, train_on: str = "all_assistant", text_without_chat: str = "reject") -> list[Piece]:
    """Pieces of a ``{"text": ...}`` record; ``PieceEncoder.encode`` turns them into ids and labels."""
    return text_record(obj, train_on=train_on, text_without_chat=text_without_chat)[1]


def text_record(obj: dict, *, source: str = "", line: int = 0, train_on: str = "all_assistant",
                text_without_chat: str = "reject") -> tuple[Conversation, list[Piece]]:
    """A ``{"text": ...}`` record as (Conversation, pieces).

    The Conversation carries what the pipeline counts and hashes (id, turns, special-text flag);
    it is *not* meant to be rendered again: the pieces are the rendering. Raises ``Reject``.
    """
    _check_options(train_on, text_without_chat)
    text = _text_of(obj)
    rid = obj.get("id")
    rid = str(rid) if rid is not None else f"{source}:{line}"
    turns = parse_chat_text(text)
    if turns is None:
        body = _prose(text, text_without_chat)
        conv = Conversation(rid, [Message("assistant", body, "text")], None, source, line,
                            bool("<|" in body and SPECIAL_TEXT.search(body)))
        return conv, [(SPECIAL, BOS), (TRAINED, body)]
    flags = trained_turns(turns, train_on)
    return turns_conversation(turns, flags, rid, source, line), turns_to_pieces(turns, flags)


def turns_conversation(turns: list[ChatTurn], flags: list[bool], rid: str, source: str = "",
                       line: int = 0) -> Conversation:
    """The Conversation the pipeline counts and hashes for parsed turns (never rendered again)."""
    messages = [Message(_MESSAGE_ROLE[t.role], t.content, t.role, None, f)  # type: ignore[arg-type]
                for t, f in zip(turns, flags, strict=True)]
    special = any("<|" in t.content and SPECIAL_TEXT.search(t.content) for t in turns)
    return Conversation(rid, messages, None, source, line, special)
