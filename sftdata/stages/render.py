"""The Llama-3, 3.1, 3.2 and 3.3 chat templates, rendered without Jinja.

Each conversation becomes a list of *pieces*: control-token ids and text spans, each span marked
trained or not. Rendering to pieces instead of one string is what makes the labels exact and the
content safe: a user who types ``<|eot_id|>`` gets text, because only the renderer emits control
tokens. The output must equal, token for token, the official templates
(``trl/chat_templates/llama3*.jinja``, the models' ``tokenizer_config.json``) rendered by
``transformers.apply_chat_template`` and tokenised without special-token insertion;
``tests/stages/test_parity.py`` holds us to that on whole corpora, ``tests/stages/test_parity_agentic.py`` on
built-in tools, ``<|python_tag|>``/``<|eom_id|>`` turns and tools in the system message.

Llama 3.3 has no template of its own: its models ship the 3.1 template, so ``llama3.3`` renders
exactly as ``llama3.1`` and differs only in name (and so in the manifest's template fingerprint).

Why the span after a header can be split from its ``\\n\\n``: the official template trims content,
so content never starts with whitespace, and the Llama-3 pre-tokenizer always ends a
``\\s*[\\r\\n]+`` run before a non-space character. The parity tests check this on every record.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from enum import Enum
from typing import TYPE_CHECKING

from sftdata.stages import builtin_tools
from sftdata.stages.records import Conversation, Message, ToolCall

if TYPE_CHECKING:
    from sftdata.config import Settings

# Piece kinds.
SPECIAL = 0  # value: a control-token name
TEXT = 1  # untrained text
TRAINED = 2  # trained text
CONST = 3  # untrained text that repeats across records (cached by the encoder)
TRAINED_SPECIAL = 4  # a trained control token: a trained turn's closer, or the <|python_tag|> of a trained call
HEADER = 5  # value: a role; <|start_header_id|> role <|end_header_id|> \n\n, untrained (one cached id run)

Piece = tuple[int, object]

HEADER_NEWLINE = "\n\n"
TOOLS_PREAMBLE = (
    "Given the following functions, please respond with a JSON for a function call "
    "with its proper arguments that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)
# The same guidance when the tool definitions go into the system message (tools_in_user_message: false).
SYSTEM_TOOLS_PREAMBLE = (
    "You have access to the following functions. To call a function, please respond with JSON for a "
    "function call."
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)


class Template(str, Enum):
    LLAMA3 = "llama3"
    LLAMA3_1 = "llama3.1"
    LLAMA3_2 = "llama3.2"
    LLAMA3_3 = "llama3.3"  # the 3.1 format: the Llama-3.3 models ship the 3.1 template

    @classmethod
    def parse(cls, value: str) -> Template:
        aliases = {"llama3.0": "llama3", "llama3_1": "llama3.1", "llama3_2": "llama3.2", "llama3_3": "llama3.3",
                   "llama-3": "llama3", "llama-3.1": "llama3.1", "llama-3.2": "llama3.2", "llama-3.3": "llama3.3"}
        try:
            return cls(aliases.get(value, value))
        except ValueError:
            raise ValueError(f"unknown template {value!r}; expected llama3, llama3.1, llama3.2 or llama3.3") from None

    @property
    def has_builtin_tools(self) -> bool:
        return self.value in builtin_tools.BUILTIN_TEMPLATES


def _dumps(obj: object, indent: int | None = None) -> str:
    # transformers' `tojson` filter: json.dumps with ensure_ascii=False and default separators.
    return json.dumps(obj, ensure_ascii=False, indent=indent)


class Llama3Renderer:
    """Renders a Conversation to pieces for one template of the family.

    ``train_on``: ``all_assistant`` trains every assistant turn whose weight is not 0;
    ``last_assistant`` only the final assistant turn. ``tools_in_user_message``: as the official
    templates' argument, False puts the tool definitions into the system message. The built-in
    tools come with each Conversation (``validate`` resolves record against pipeline).
    """

    def __init__(self, template: Template | str, date_string: str, train_on: str = "all_assistant",
                 tools_in_user_message: bool = True) -> None:
        self.template = Template.parse(template) if isinstance(template, str) else template
        self.date_string = date_string
        if train_on not in ("all_assistant", "last_assistant"):
            raise ValueError(f"unknown train_on {train_on!r}")
        self.train_on = train_on
        self.tools_in_user_message = tools_in_user_message

    @classmethod
    def for_settings(cls, settings: Settings) -> Llama3Renderer:
        """The renderer a pipeline's Settings describe (one place, so new knobs reach every caller)."""
        return cls(settings.template, settings.date_string, settings.train_on, settings.tools_in_user_message)

    # -- the three parts of a turn, as in the official format -------------------------------
    @staticmethod
    def _header(out: list[Piece], role: str) -> None:
        out.append((HEADER, role))

    @staticmethod
    def _body(out: list[Piece], text: str, trained: bool) -> None:
        if text:
            out.append((TRAINED if trained else TEXT, text))

    @staticmethod
    def _end(out: list[Piece], trained: bool, closer: str = "<|eot_id|>") -> None:
        out.append((TRAINED_SPECIAL if trained else SPECIAL, closer))

    # -----------------------------------------------------------------------------------------
    def trained_flags(self, conv: Conversation) -> list[bool]:
        flags = [m.role == "assistant" and m.train for m in conv.messages]
        if self.train_on == "last_assistant":
            last = max(i for i, m in enumerate(conv.messages) if m.role == "assistant")
            flags = [f and i == last for i, f in enumerate(flags)]
        return flags

    def render(self, conv: Conversation) -> list[Piece]:
        flags = self.trained_flags(conv)
        out: list[Piece] = [(SPECIAL, "<|begin_of_text|>")]
        if self.template is Template.LLAMA3:
            for msg, trained in zip(conv.messages, flags, strict=True):
                self._turn(out, msg.source_role if msg.role == "tool" else msg.role, msg.content.strip(), trained)
            return out
        messages = list(zip(conv.messages, flags, strict=True))
        system = ""
        if messages and messages[0][0].role == "system":
            system = messages[0][0].content.strip()
            messages = messages[1:]
        builtin = conv.builtin_tools
        if builtin and not self.template.has_builtin_tools:
            raise ValueError(f"the {self.template.value} template has no built-in tools (validation rejects these)")
        preamble = ("Environment: ipython\n" if builtin or conv.tools is not None else "") + (
            builtin_tools.tools_line(builtin)
            + f"Cutting Knowledge Date: December 2023\nToday Date: {self.date_string}\n\n")
        self._header(out, "system")
        out.append((CONST, preamble))
        if conv.tools is not None and not self.tools_in_user_message:
            system = SYSTEM_TOOLS_PREAMBLE + _tool_definitions(conv.tools) + system
        self._body(out, system, False)
        self._end(out, False)
        if conv.tools is not None and self.tools_in_user_message:
            first, _ = messages[0]
            self._header(out, "user")
            out.append((TEXT, TOOLS_PREAMBLE + _tool_definitions(conv.tools) + first.content.strip()))
            self._end(out, False)
            messages = messages[1:]
        for msg, trained in messages:
            if msg.tool_call is not None:
                self._call(out, msg.tool_call, builtin, trained)
            elif msg.role == "tool":
                self._turn(out, "ipython", _dumps(msg.content), False)
            else:
                self._turn(out, msg.role, msg.content.strip(), trained)
        return out

    def _turn(self, out: list[Piece], role: str, text: str, trained: bool) -> None:
        self._header(out, role)
        self._body(out, text, trained)
        self._end(out, trained)

    def _call(self, out: list[Piece], call: ToolCall, builtin: tuple[str, ...], trained: bool) -> None:
        """One tool-call turn. With built-in tools in effect every call turn closes with <|eom_id|>
        ("ipython mode": the model hands control to the tool), trained like any closer; a call to a
        built-in tool is <|python_tag|> (trained: the model must emit it) + ``name.call(...)``."""
        self._header(out, "assistant")
        if call.name in builtin:
            out.append((TRAINED_SPECIAL if trained else SPECIAL, "<|python_tag|>"))
            self._body(out, builtin_tools.call_text(call), trained)
        else:
            self._body(out, '{"name": "' + call.name + '", "parameters": ' + _dumps(call.arguments) + "}", trained)
        self._end(out, trained, "<|eom_id|>" if builtin else "<|eot_id|>")

    def fingerprint(self) -> str:
        """Changes when the rendering could change: template, date, labelling rule, tool placement, this code."""
        src = (inspect.getsource(Llama3Renderer) + TOOLS_PREAMBLE + SYSTEM_TOOLS_PREAMBLE
               + inspect.getsource(builtin_tools.tools_line) + inspect.getsource(builtin_tools.call_text))
        blob = json.dumps([self.template.value, self.date_string, self.train_on, self.tools_in_user_message, src])
        return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


_TOOL_TEXT: dict[str, str] = {}  # repr(tool) -> its indented JSON; tool schemas repeat across records


def _tool_text(tool: object) -> str:
    """``json.dumps(tool, indent=4)`` runs the pure-Python encoder (most of rendering a record with
    tools), so each distinct tool is rendered once per process. The key is ``repr``: it tells apart
    everything the JSON text does (key order, 1 / 1.0 / True, NaN / None) and is built in C."""
    key = repr(tool)
    text = _TOOL_TEXT.get(key)
    if text is None:
        if len(_TOOL_TEXT) >= 4096:  # bounded: a corpus of ever-new tools must not grow memory
            _TOOL_TEXT.clear()
        text = _TOOL_TEXT[key] = _dumps(tool, indent=4)
    return text


def _tool_definitions(tools: list[dict]) -> str:
    return "".join(_tool_text(t) + "\n\n" for t in tools)


def official_template_text(template: Template | str) -> str:
    """The official Jinja template for parity checks, as shipped inside the `trl` package."""
    from importlib import resources

    t = Template.parse(template) if isinstance(template, str) else template
    name = {Template.LLAMA3: "llama3.jinja", Template.LLAMA3_1: "llama3_1.jinja",
            Template.LLAMA3_2: "llama3_2.jinja", Template.LLAMA3_3: "llama3_1.jinja"}[t]
    return resources.files("trl").joinpath("chat_templates", name).read_text()


def to_template_messages(msgs: list[Message]) -> list[dict]:
    """Messages in the shape `apply_chat_template` expects (used by parity tests and `--source`)."""
    out = []
    for m in msgs:
        if m.tool_call is not None:
            out.append({"role": "assistant", "content": None, "tool_calls": [
                {"type": "function", "function": {"name": m.tool_call.name, "arguments": m.tool_call.arguments}}]})
        else:
            out.append({"role": m.source_role or m.role, "content": m.content})
    return out
