"""Every rejection reason code, with its one-line meaning: the catalogue beside the record types.

Why a catalogue: a reason code becomes a counter in the manifest, a line in the summary and a
key that CI scripts match on, so codes are an interface. Stages raise ``Reject("code", ...)``
with a code listed here (``tests/stages/test_reasons.py`` holds every raised code to it), and the table
in ``docs/output-format.md`` is generated from it (``python -m sftdata.stages.reasons --write-docs``).
"""

from __future__ import annotations

import sys
from pathlib import Path

REASONS: dict[str, str] = {
    # read / parse
    "invalid_json": "the line (or the JSON file) is not valid JSON",
    "invalid_utf8": "the line is not valid UTF-8",
    "lone_surrogate": "a string holds a lone UTF-16 surrogate, which no tokenizer can encode",
    "too_deep": "JSON nested too deeply to parse safely",
    "duplicate_key": "an object repeats a key (JSON parsers disagree on which value wins)",
    "record_too_large": "the line is longer than max_record_bytes; it was skipped without being held",
    "decompressed_too_large": "a compressed input grew past max_decompressed_bytes; the rest was not read",
    "too_many_blank_bytes": "an input (or chunk) held more blank lines than max_blank_bytes; the rest was not read",
    "json_too_large": "a compressed .json file (one JSON value) decompressed past 16 x max_record_bytes; it was not read",
    "corrupt_input": "a compressed or columnar input is truncated or corrupt; the rest was not read",
    # adapt
    "not_an_object": "a record must be a JSON object",
    "unsupported_format": "the record format is not one sftdata can read here",
    "adapter_sharegpt": "a ShareGPT record whose turns cannot be mapped to messages",
    "adapter_alpaca": "an Alpaca record whose fields cannot be mapped to messages",
    "adapter_query_response": "a query/response (ms-swift) record whose fields cannot be mapped to messages",
    "adapter_pairs": "a record of exchanges ({human, assistant}, {input, output}, ...) that cannot be mapped",
    "adapter_tree": "an Open-Assistant message tree that cannot be walked (replies not a list of nodes, text "
                    "not a string)",
    "not_a_message_list": "input format message_list, but the line is not a JSON list of messages",
    "invalid_function_call": "a legacy function_call that is not {name, arguments}, or not on an assistant message",
    "conflicting_system": "a top-level system prompt beside a different system message (one would be lost)",
    # keys sftdata does not read (never dropped silently)
    "reasoning_not_rendered": "a message carries reasoning (reasoning_content, reasoning, thinking), which the "
                              "Llama-3 templates cannot render",
    "unmapped_tool_calls": "tool calls under a name the format does not read (tool_call, function_calls, ...): "
                           "map them with --field tool_calls=NAME",
    "unmapped_tools": "tool definitions under a name the format does not read (functions, tool_definitions)",
    "unknown_key": "strict_keys: the record carries a key sftdata does not read",
    # validate (schema)
    "schema": "the record does not match schemas/record.schema.json",
    "missing_field": "a required field is missing",
    "wrong_type": "a field has the wrong JSON type",
    "wrong_value": "a field has a value outside its allowed set",
    "unknown_role": "a message role other than system, user, assistant, tool (or ipython)",
    "unsupported_part": "a content part of a type the template cannot render (images, audio)",
    "missing_content": "content is missing or null where the template needs text",
    # validate (semantics the schema cannot express)
    "no_assistant": "the record has no assistant message, so nothing would be trained",
    "no_trainable_turn": "every assistant message has weight 0",
    "empty_assistant": "a trained assistant reply is empty or whitespace only",
    "content_with_tool_calls": "text beside tool_calls, which the official template drops",
    "multiple_tool_calls": "more than one tool call in a message; the official templates render one",
    "invalid_tool_arguments": "tool-call arguments are not a JSON object",
    "tool_result_mismatch": "a tool result's tool_call_id (or name) names another call than the one before it",
    "tools_without_user": "tools given, but the first non-system message is not a user message",
    "template_unsupported": "the record asks for what its template cannot render (tools under Llama-3.0, "
                            "built-in tools under Llama-3.2)",
    "invalid_builtin_tool": "a built-in tool name that is not an identifier (it is called as name.call(...))",
    "builtin_call_arguments": "a built-in tool call with a non-string argument, which the template cannot render",
    "conflicting_tools": "both tools and custom_tools given, and they differ (they are one setting)",
    # text and prompt/completion formats
    "empty_text": "the text is empty or whitespace only",
    "no_chat_structure": "the text has no Llama-3 header: it is not a rendered conversation",
    "text_before_header": "text before the first header of a rendered conversation",
    "unclosed_header": "a header is not closed by <|end_header_id|>",
    "malformed_header": "a header is not followed by a blank line as the template writes it",
    "missing_eot": "a turn of a rendered conversation has no closing <|eot_id|>",
    "unsupported_eom": "a turn ends with <|eom_id|>, which this format does not render",
    "empty_completion": "the completion is empty or whitespace only",
    "completion_boundary": "the completion starts inside a header or a turn",
    # label
    "too_long": "longer than max_length tokens with truncation: drop",
    "no_trained_tokens": "no token of the row would be trained",
    "no_trained_tokens_after_truncation": "truncation to max_length removed every trained token",
    # dedupe and faults
    "more_problems": "inside `problems` only: the record has more problems than are listed",
    "duplicate": "an exact duplicate of an earlier record (dedupe: exact); the first is kept",
    "contaminated": "a mix: the record's prompt hash is one of a split.decontaminate file's (docs/mixing.md)",
    "internal_error": "a fault of sftdata, not of the record: please report it with the record",
}

_START, _END = "<!-- reasons:start -->", "<!-- reasons:end -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "output-format.md"


def reasons_markdown() -> str:
    rows = "\n".join(f"| `{code}` | {meaning} |" for code, meaning in REASONS.items())
    return f"{_START}\n| reason | meaning |\n| --- | --- |\n{rows}\n{_END}"


def docs_with_table(text: str) -> str:
    """``text`` with its generated reasons table replaced (or appended under a heading)."""
    if _START in text and _END in text:
        head, rest = text.split(_START, 1)
        return head + reasons_markdown() + rest.split(_END, 1)[1]
    return text.rstrip("\n") + "\n\n## Rejection reasons\n\n" + reasons_markdown() + "\n"


def main(argv: list[str]) -> int:
    if argv[1:] == ["--write-docs"]:
        DOC.write_text(docs_with_table(DOC.read_text()))
        return 0
    print(reasons_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
