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
