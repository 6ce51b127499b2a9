"""Llama 3.1's built-in tools: which records may use them, and how a call to one is written.

Why a module of its own: built-in tools (``brave_search``, ``wolfram_alpha``, ``code_interpreter``)
change three things at once in the official Llama-3.1 template (``trl/chat_templates/llama3_1.jinja``,
also the Llama-3.3 models' template): the system header gains ``Environment: ipython`` and a
``Tools:`` line, a call to a built-in tool is written ``<|python_tag|>name.call(arg="...")``, and
*every* assistant tool-call turn then closes with ``<|eom_id|>``. They can be named per record
(``builtin_tools`` beside ``tools``) or per pipeline (``render.builtin_tools``); the rules that decide
which applies, and which templates can render them, live here so that validation, the renderer
and the pipeline settings agree.

The call syntax follows the official template exactly, including its limits: argument values are
concatenated as they are, without escaping, so they must be strings (the template cannot render
anything else); ``code_interpreter`` is rendered ``code_interpreter.call(code="...")`` like any other
built-in tool, as the Hugging Face template does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sftdata.stages.records import Reject, ToolCall

# Templates whose official Jinja renders `builtin_tools`. Llama 3.2's ignores the argument, so a
# record asking for built-in tools there would silently lose its `Tools:` line and `<|eom_id|>`s.
BUILTIN_TEMPLATES = frozenset({"llama3.1", "llama3.3"})
KNOWN_BUILTIN_TOOLS = ("brave_search", "wolfram_alpha", "code_interpreter")
UNLISTED = "code_interpreter"  # enabled by `Environment: ipython` alone, never on the `Tools:` line
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def valid_name(name: Any) -> bool:
    """A built-in tool is called as ``name.call(...)``: its name must be a Python identifier."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def plain_builtin_tools(value: Any) -> bool:
    """One-sided fast check for ``validate.plainly_valid``: True only if the schema surely accepts."""
    if value is None:
        return True
    if type(value) is not list:
        return False
    return all(type(v) is str and _NAME.fullmatch(v) for v in value) and len(set(value)) == len(value)


def tools_line(builtin: Sequence[str]) -> str:
    """The system-header lines the official template writes for built-in tools (none: empty)."""
    if not builtin:
        return ""
    return "Tools: " + ", ".join(t for t in builtin if t != UNLISTED) + "\n\n"


def call_text(call: ToolCall) -> str:
    """``name.call(a="x", b="y")``: the text after ``<|python_tag|>``, exactly as the template joins it."""
    args = ", ".join(f'{key}="{value}"' for key, value in call.arguments.items())
    return f"{call.name}.call({args})"


def check_call(call: ToolCall, pointer: str) -> None:
    """A built-in call's argument values are written between quotes as they are: strings only."""
    for key, value in call.arguments.items():
        if not isinstance(value, str):
            where = f"{pointer}/0/function/arguments/{key}"
            raise Reject("builtin_call_arguments", f"{where}: a call to the built-in tool {call.name!r} is "
                         f"written {call.name}.call({key}=\"...\"); the template renders only string values, "
                         f"found {type(value).__name__}", where)


def template_error(template: str, what: str) -> str | None:
    """Why ``template`` cannot render ``what`` (a description of a built-in tools request), or None."""
    if template in BUILTIN_TEMPLATES:
        return None
    why = ("renders no tools at all" if template == "llama3"
           else "has no built-in tools: its official template ignores builtin_tools")
    return f"{what}: the {template} template {why}; use llama3.1 or llama3.3"


def record_builtin_tools(obj: dict, default: Sequence[str], template: str) -> tuple[str, ...]:
    """The built-in tools in effect for one record: its own ``builtin_tools`` (``[]`` turns the
    pipeline's off), else the pipeline's ``default``. Raises Reject when the template cannot render them."""
    own = obj.get("builtin_tools")
    tools = tuple(own) if own is not None else tuple(default)
    for i, name in enumerate(tools):
        if not valid_name(name):
            ptr = f"/builtin_tools/{i}" if own is not None else ""
            raise Reject("invalid_builtin_tool", f"{ptr or 'render.builtin_tools'}: {name!r} is not a tool name "
                         "(called as name.call(...), it must be an identifier)", ptr)
    if tools:
        why = template_error(template, "/builtin_tools" if own is not None else "render.builtin_tools")
        if why is not None:
            raise Reject("template_unsupported", why, "/builtin_tools" if own is not None else "")
    return tools


def record_tools(obj: dict) -> list[dict] | None:
    """``tools``, or ``custom_tools``, the official template's other name for it; empty means none."""
    tools, custom = obj.get("tools") or None, obj.get("custom_tools") or None
    if tools is not None and custom is not None and tools != custom:
        raise Reject("conflicting_tools", "/custom_tools: the record gives both tools and custom_tools, and "
                     "they differ (custom_tools is another name for tools; give one)", "/custom_tools")
    return custom if custom is not None else tools
