"""Where a text can be cut without changing the Llama-3 ids before the cut.

Why: with ``truncation: truncate`` the ids past ``max_length`` are thrown away, so a 60 MB record
need not be encoded whole; but the ids of a prefix equal the first ids of the whole text only if
the cut falls where the pre-tokenizer (``LLAMA3_PATTERN``) certainly ends a pre-token, for any text
after it (the BPE runs inside one pre-token, and a pre-token cut in two can merge differently).

The boundaries used, each decided by the two characters around the cut (``X|Y``):

- ``X`` any non-whitespace character and ``Y`` a space. No alternative of the pattern continues a
  match from non-whitespace into a space (letters continue only with letters, digits with digits,
  symbols only with symbols or line breaks), and each alternative looks no further than the
  first character of another class, so the matches up to ``X`` are the same in the prefix.
  Python's ``str.isspace`` holds for every Unicode ``White_Space`` character (and a few more), so
  its ``\\S`` never calls whitespace what the pattern does not.
- ``X`` an ASCII letter or a CJK ideograph (letters in every Unicode version) and ``Y`` an ASCII
  non-letter or CJK punctuation: a letter run ends there.
- ``X`` an ASCII digit and ``Y`` an ASCII non-digit: a digit run ends there, and its groups of
  three are counted from its start.

No boundary splits a surrogate pair, so the repair of lone surrogates is the same in the prefix.
``tests/tokenizer/test_truncate_cut.py`` compares the ids with the whole text's at many cuts.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r"(?<=\S)(?= )"
                       r"|(?<=[A-Za-z\u4e00-\u9fef])(?=[\x00-\x40\x5b-\x60\x7b-\x7f\u3001\u3002\uff01\uff0c\uff1f])"
                       r"|(?<=[0-9])(?=[\x00-\x2f\x3a-\x7f])")


def safe_cut(text: str, at_least: int) -> int | None:
    """The first position ``c >= at_least`` (``0 < c < len(text)``) where ``text`` can be cut: the
    ids of ``text[:c]`` are the first ids of ``text``. None when there is none."""
    found = _BOUNDARY.search(text, max(1, at_least))
    return found.start() if found is not None else None
