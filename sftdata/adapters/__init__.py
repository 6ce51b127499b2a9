"""Adapters: record formats other than ``messages`` turned into the renderer's pieces.

Each adapter module reads one input format and returns pieces (``sftdata.templates``) that
``PieceEncoder`` encodes exactly like a ``messages`` record, so every format shares one labelling
rule and one encoder. Other formats live in their own modules of this package.
"""

from sftdata.adapters.prompt_completion import prompt_completion_pieces, prompt_completion_record
from sftdata.adapters.text import ChatTurn, parse_chat_text, text_record, text_to_pieces

__all__ = [
    "ChatTurn",
    "parse_chat_text",
    "prompt_completion_pieces",
    "prompt_completion_record",
    "text_record",
    "text_to_pieces",
]
