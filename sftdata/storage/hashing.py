"""File hashing shared by the tokenizer cache, the shard writer and the integrity check."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in blocks so memory stays flat for any shard size."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
