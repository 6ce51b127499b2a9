"""Every setting with a fixed set of values, as one string ``Enum`` each.

Why here: the command line's ``click.Choice`` lists, the pipeline schema's ``enum`` lists and the
code that branches on a value used to spell each list separately (``train_on`` in six places).
This module imports nothing heavy, so the CLI builds its options from it without slowing
``sftdata --help``; ``tests/cli/test_architecture.py`` holds the schema's lists and the templates'
names to these.
"""

from __future__ import annotations

from enum import Enum


class InputFormat(str, Enum):
    AUTO = "auto"
    MESSAGES = "messages"
    SHAREGPT = "sharegpt"
    ALPACA = "alpaca"
    TEXT = "text"
    PROMPT_COMPLETION = "prompt_completion"
    OPENAI_FUNCTIONS = "openai_functions"  # OpenAI's legacy function calling
    MESSAGE_LIST = "message_list"  # a line that is a list of messages
    QUERY_RESPONSE = "query_response"  # ms-swift
    PAIRS = "pairs"  # {human, assistant} / {input, output} exchanges
    OASST_TREE = "oasst_tree"  # Open-Assistant message trees


class TreePaths(str, Enum):
    """Conversations of a message tree (``oasst_tree``): the best-ranked path, or every path."""

    BEST = "best"
    ALL = "all"


class TemplateName(str, Enum):
    LLAMA3 = "llama3"
    LLAMA3_1 = "llama3.1"
    LLAMA3_2 = "llama3.2"
    LLAMA3_3 = "llama3.3"  # the 3.1 format under its own name


class TrainOn(str, Enum):
    ALL_ASSISTANT = "all_assistant"
    LAST_ASSISTANT = "last_assistant"


class Truncation(str, Enum):
    DROP = "drop"
    TRUNCATE = "truncate"


class Packing(str, Enum):
    NONE = "none"
    BFD = "bfd"


class Dedupe(str, Enum):
    NONE = "none"
    EXACT = "exact"


class Encoder(str, Enum):
    """``render.encoder``: still accepted so older pipeline files load, with no effect (the tokenizer
    alone decides its encode path: ``sftdata.tokenizer.loader``)."""

    AUTO = "auto"
    HF = "hf"
    TIKTOKEN = "tiktoken"
    SPLINTR = "splintr"


class ExecutorName(str, Enum):
    LOCAL = "local"
    RAY = "ray"


def values(choice: type[Enum]) -> list[str]:
    """The values of a choice, in declaration order (for ``click.Choice`` and messages)."""
    return [m.value for m in choice]
