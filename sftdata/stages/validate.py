"""Validate one parsed record: the JSON Schema, then semantic rules (parsing: ``sftdata.stages.parse``).

The JSON Schema in ``schemas/record.schema.json`` is the single source of truth for the shape.
A compiled validator (fastjsonschema) answers yes/no fast on the hot path; only when it says no
do we run the reference ``jsonschema`` validator, which gives the JSON pointer and the words
for the quarantine line. ``tests/stages/test_validate.py`` proves the two agree.

Semantic rules the schema cannot express live here, each with its own reason code.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from sftdata.stages import builtin_tools
from sftdata.stages.parse import _find_lone_surrogate, _reject_constant
from sftdata.stages.parse import parse_json as parse_json  # re-exported: it lived here
from sftdata.stages.records import MAX_PROBLEMS, Conversation, Message, Reject, ToolCall

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "record.schema.json"
ROLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool", "ipython": "tool"}
# Text that the Llama-3 tokenizer would turn into a control token if it were parsed as special.
SPECIAL_TEXT = re.compile(r"<\|(?:begin_of_text|end_of_text|start_header_id|end_header_id|eot_id|eom_id|"
                          r"python_tag|finetune_right_pad_id|reserved_special_token_\d+|image|step_id)\|>")


def schema_path() -> Path:
    if SCHEMA_PATH.is_file():
        return SCHEMA_PATH
    raise FileNotFoundError(f"record schema not found at {SCHEMA_PATH}")


@lru_cache(maxsize=1)
def record_schema() -> dict:
    return json.loads(schema_path().read_text())


@lru_cache(maxsize=1)
def _fast_validator():
    import fastjsonschema

    return fastjsonschema.compile(record_schema())


@lru_cache(maxsize=1)
def _reference_validator():
    from jsonschema import Draft202012Validator

    return Draft202012Validator(record_schema())


def _pointer(path) -> str:
    return "".join(f"/{p}" for p in path)


def explain_schema_error(obj: Any) -> Reject:
    """Every schema error of the record, the most useful first (``best_match``): pointer, what was
    found, what was expected. The first one is the Reject's own reason and message."""
    from jsonschema.exceptions import best_match

    errors = list(_reference_validator().iter_errors(obj))
    err = best_match(errors)
    if err is None:  # the validators disagree: never expected, but never silent either
        return Reject("schema", "record rejected by the compiled schema validator")
    rest = [e for e in errors if e is not err]
    explained = [_explain(err)] + [_explain(e) for e in rest[: MAX_PROBLEMS - 1]]
    if len(rest) >= MAX_PROBLEMS:
        explained.append(Reject("more_problems", f"and {len(rest) - MAX_PROBLEMS + 1} more schema problem(s)"))
    return Reject.combine(explained)


def _explain(err) -> Reject:
    pointer = _pointer(err.absolute_path)
    found = json.dumps(err.instance, ensure_ascii=False)[:80]
    if err.validator == "enum" and pointer.endswith("/role"):
        roles = ", ".join(err.validator_value)
        return Reject("unknown_role", f"{pointer}: found {found}, expected one of {roles}", pointer)
    if err.validator in ("enum", "const"):
        allowed = err.validator_value if err.validator == "enum" else [err.validator_value]
        return Reject("wrong_value", f"{pointer}: found {found}, expected one of "
                      f"{', '.join(json.dumps(v) for v in allowed)}", pointer)
    if err.validator == "required":
        return Reject("missing_field", f"{pointer or '/'}: {err.message}", pointer)
    if err.validator == "minLength" and pointer == "/id":
        return Reject("wrong_value", '/id: found "", expected a non-empty string or an integer', pointer)
    if err.validator in ("type", "anyOf"):
        expected = err.validator_value if err.validator == "type" else err.schema.get("description", None)
        if err.validator == "anyOf":
            expected = "a string, null, or a list of text parts"
        return Reject("wrong_type", f"{pointer}: found {found}, expected {expected}", pointer)
    return Reject("schema", f"{pointer or '/'}: {err.message}", pointer)


def check_schema(obj: Any) -> None:
    if not isinstance(obj, dict):
        kind = type(obj).__name__ if obj is not None else "null"
        raise Reject("not_an_object", f"a record must be a JSON object, found {kind}")
    if plainly_valid(obj):
        return
    try:
        _fast_validator()(obj)
    except Exception:
        raise explain_schema_error(obj) from None


_ROLES = frozenset(("system", "user", "assistant", "tool", "ipython"))
_OPTIONAL_STR = ("name", "tool_call_id")


def plainly_valid(rec: dict) -> bool:
    """True only for records the record schema certainly accepts, in the shapes real data has.

    The compiled validator costs more per record than tokenizing a short chat; this walk answers
    for the common case in a fraction of that. It is one-sided: False means "ask the validator",
    never "invalid". Types are checked exactly (``type(x) is int``): JSON Schema's integers are not
    booleans, and anything unusual (floats for ``weight``, subclasses) is left to the validator.
    ``tests/stages/test_validate.py`` checks that every record it accepts, ``jsonschema`` accepts.
    """
    rid = rec.get("id")
    if rid is not None and type(rid) is not str and type(rid) is not int:
        return False
    if rid == "":
        return False
    if "id" in rec and rid is None:
        return False
    messages = rec.get("messages")
    if type(messages) is not list or not messages:
        return False
    for m in messages:
        if type(m) is not dict or type(m.get("role")) is not str or m["role"] not in _ROLES:
            return False
        content = m.get("content")
        if content is not None and type(content) is not str and not _plain_parts(content):
            return False
        calls = m.get("tool_calls")
        if calls is not None and not _plain_calls(calls):
            return False
        weight = m.get("weight", 0)
        if type(weight) is not int or weight not in (0, 1):
            return False
        for key in _OPTIONAL_STR:
            if key in m and type(m[key]) is not str:
                return False
    tools, custom = rec.get("tools"), rec.get("custom_tools")
    return ((tools is None or _plain_tools(tools)) and (custom is None or _plain_tools(custom))
            and builtin_tools.plain_builtin_tools(rec.get("builtin_tools")))


def _plain_parts(parts: Any) -> bool:
    if type(parts) is not list:
        return False
    for p in parts:
        if type(p) is not dict or type(p.get("type")) is not str:
            return False
        for key in ("text", "value"):
            if key in p and type(p[key]) is not str:
                return False
    return True


def _plain_calls(calls: Any) -> bool:
    if type(calls) is not list:
        return False
    for c in calls:
        if type(c) is not dict or ("id" in c and type(c["id"]) is not str):
            return False
        if "type" in c and (type(c["type"]) is not str or c["type"] != "function"):
            return False
        fn = c.get("function")
        if not _named_function(fn) or type(fn.get("arguments")) not in (dict, str):
            return False
    return True


def _named_function(fn: Any) -> bool:
    return type(fn) is dict and type(fn.get("name")) is str and fn["name"] != ""


def _plain_tools(tools: Any) -> bool:
    if type(tools) is not list:
        return False
    for t in tools:
        if type(t) is not dict or type(t.get("type")) is not str or t["type"] != "function":
            return False
        fn = t.get("function")
        if not _named_function(fn) or ("description" in fn and type(fn["description"]) is not str):
            return False
        if "parameters" in fn and type(fn["parameters"]) is not dict:
            return False
    return True


def _content_text(content: Any, pointer: str, parts_policy: dict[str, str]) -> str | None:
    if content is None or isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            text = part.get("text", part.get("value"))
            if not isinstance(text, str):
                raise Reject("wrong_type", f"{pointer}/{i}: a text part needs a string `text`", f"{pointer}/{i}")
            texts.append(text)
        elif parts_policy.get(kind) == "drop":
            continue
        else:
            raise Reject("unsupported_part", f"{pointer}/{i}: content part of type {kind!r} cannot be rendered "
                         "as text (map it with `parts` in the pipeline)", f"{pointer}/{i}")
    return "".join(texts)


def loads_nested(text: str, pointer: str, reason: str) -> Any:
    """A JSON document embedded in a string (tool arguments, tool lists): same rules as a line."""
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise Reject("too_deep", f"{pointer}: JSON nested too deeply to parse", pointer) from None
    except ValueError:
        raise Reject(reason, f"{pointer}: not valid JSON", pointer) from None
    where = _find_lone_surrogate(obj)
    if where is not None:
        raise Reject("lone_surrogate", f"{pointer}{where}: string holds a lone UTF-16 surrogate", pointer)
    return obj


def _tool_call(calls: list, pointer: str) -> ToolCall:
    if len(calls) != 1:
        raise Reject("multiple_tool_calls", f"{pointer}: {len(calls)} tool calls in one message; the Llama-3 "
                     "templates render exactly one", pointer)
    fn = calls[0]["function"]
    args = fn["arguments"]
    if isinstance(args, str):
        args = loads_nested(args, f"{pointer}/0/function/arguments", "invalid_tool_arguments")
    if not isinstance(args, dict):
        raise Reject("invalid_tool_arguments", f"{pointer}/0/function/arguments: expected a JSON object",
                     f"{pointer}/0/function/arguments")
    return ToolCall(fn["name"], args)


def _message(m: dict, i: int, template: str, parts_policy: dict[str, str]) -> Message:
    """One schema-valid message, normalised; raises Reject."""
    role = ROLES[m["role"]]
    text = m.get("content")
    if text is not None and type(text) is not str:
        text = _content_text(text, f"/messages/{i}/content", parts_policy)
    calls = m.get("tool_calls") or None
    call = None
    train = m.get("weight", 1) != 0
    if calls is not None:
        ptr = f"/messages/{i}"
        if role != "assistant":
            raise Reject("schema", f"{ptr}/tool_calls: only assistant messages may call tools", f"{ptr}/tool_calls")
        if template == "llama3":
            raise Reject("template_unsupported", f"{ptr}/tool_calls: the Llama-3.0 template cannot render "
                         "tool calls; use llama3.1, llama3.2 or llama3.3", f"{ptr}/tool_calls")
        call = _tool_call(calls, f"{ptr}/tool_calls")
        if text and text.strip():
            raise Reject("content_with_tool_calls", f"{ptr}/content: the official template drops text "
                         "beside a tool call; it would be lost", f"{ptr}/content")
        text = ""
    elif text is None:
        ptr = f"/messages/{i}"
        raise Reject("missing_content", f"{ptr}/content: content is missing or null (allowed only beside "
                     "tool_calls)", f"{ptr}/content")
    # An empty reply is refused only when it would be trained: with weight 0 it is context, and
    # the official template renders it as an empty turn.
    if role == "assistant" and call is None and train and (not text or text.isspace()):  # strip()'s test, no copy
        ptr = f"/messages/{i}"
        raise Reject("empty_assistant", f"{ptr}/content: the assistant reply is empty or whitespace only",
                     f"{ptr}/content")
    return Message(role, text, m["role"], call, train)


def _trained_assistant(roles: list[str], messages: list[dict]) -> bool:
    """Whether an assistant message has a weight other than 0 (a loop: cheaper than any() over a generator)."""
    for role, m in zip(roles, messages, strict=True):
        if role == "assistant" and m.get("weight", 1) != 0:
            return True
    return False


def to_conversation(obj: dict, *, source: str, line: int, template: str,
                    parts_policy: dict[str, str] | None = None, builtin_default: tuple[str, ...] = (),
                    tools_in_user_message: bool = True) -> Conversation:
    """Normalise a schema-valid record and apply the semantic rules. Raises Reject with every
    problem found (the first one as its own reason), so a record is fixed in one pass.

    ``builtin_default``: the pipeline's ``render.builtin_tools``, for records that name none;
    ``tools_in_user_message``: as the template argument (False: no first user message needed)."""
    parts_policy = parts_policy or {}
    rid = obj.get("id")
    rid = str(rid) if rid is not None else f"{source}:{line}"
    tools = builtin_tools.record_tools(obj)
    builtin = builtin_tools.record_builtin_tools(obj, builtin_default, template)
    messages: list[Message] = []
    problems: list[Reject] = []
    special = False
    for i, m in enumerate(obj["messages"]):
        try:
            msg = _message(m, i, template, parts_policy)
            if msg.tool_call is not None and msg.tool_call.name in builtin:
                builtin_tools.check_call(msg.tool_call, f"/messages/{i}/tool_calls")
        except Reject as r:
            problems.append(r)
            if len(problems) >= MAX_PROBLEMS:  # enough to act on; the rest of a hostile record is not walked
                problems.append(Reject("more_problems", f"messages after /messages/{i} were not checked",
                                       f"/messages/{i + 1}"))
                break
            continue
        if not special and "<|" in msg.content and SPECIAL_TEXT.search(msg.content):
            special = True
        if not special and msg.tool_call is not None:  # arguments are content too (code, queries)
            special = SPECIAL_TEXT.search(json.dumps(msg.tool_call.arguments, ensure_ascii=False)) is not None
        messages.append(msg)
    roles = [ROLES[m["role"]] for m in obj["messages"]]
    if "assistant" not in roles:
        problems.append(Reject("no_assistant", "the record has no assistant message", "/messages"))
    elif not _trained_assistant(roles, obj["messages"]):
        problems.append(Reject("no_trainable_turn", "every assistant message has weight 0", "/messages"))
    if tools is not None:
        rest = roles[1:] if roles[0] == "system" else roles
        if template == "llama3":
            key = "/tools" if obj.get("tools") else "/custom_tools"
            problems.append(Reject("template_unsupported", f"{key}: the Llama-3.0 template ignores tools; use "
                                   "llama3.1, llama3.2 or llama3.3", key))
        elif tools_in_user_message and (not rest or rest[0] != "user"):
            problems.append(Reject("tools_without_user", "/messages: with tools, the first non-system message "
                                   "must be a user message (the template puts the tools there; or set "
                                   "tools_in_user_message: false)", "/messages"))
    if problems:
        raise Reject.combine(problems)
    return Conversation(rid, messages, tools, source, line, special, builtin_tools=builtin)
