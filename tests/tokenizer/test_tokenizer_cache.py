"""The built-in tokenizer's cache: ranks stored as checked plain data, a fresh cache for either encoder.

Whoever can write the cache folder must not be able to run code in sftdata, and a damaged cache
must be rebuilt, never used. A fresh machine (empty cache) must work with both encoders.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sftdata.tokenizer import convert_builtin, llama3_model_file
from sftdata.tokenizer.cache import META_FILE
from sftdata.tokenizer.ranks_file import (
    _HEADER,
    RANKS_FILE,
    RankIndex,
    RanksFileError,
    decode_ranks,
    encode_ranks,
    read_ranks_file,
)
from sftdata.tokenizer.tiktoken_backend import TiktokenBackend

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = "Hello, world! 你好 🎉 <|eot_id|> 12345\n\n  tabs\tand 'll"
SHA = hashlib.sha256(b"a model file").hexdigest()
SMALL = {bytes([i]): i for i in range(256)} | {b"ab": 300, b"abc": 256, b"hello": 257, b" w": 258}


@pytest.fixture(scope="module")
def meta_ranks():
    from tiktoken.load import load_tiktoken_bpe

    return load_tiktoken_bpe(str(llama3_model_file()))


def resealed(data: bytes, payload: bytes) -> bytes:
    """``data``'s header over another payload with a matching sha256: only the structure checks catch it."""
    magic, version, count, groups, source, _ = _HEADER.unpack_from(data)
    return _HEADER.pack(magic, version, count, groups, source, hashlib.sha256(payload).digest()) + payload


def python(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SFTDATA_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


def test_ranks_file_round_trips_meta_ranks_exactly(meta_ranks):
    data = encode_ranks(meta_ranks, SHA)
    back = decode_ranks(data, SHA)
    assert back == meta_ranks and len(back) == 128000
    assert encode_ranks(back, SHA) == data  # reproducible bytes
    assert decode_ranks(encode_ranks(SMALL, SHA), SHA) == SMALL


@pytest.mark.parametrize("damage", [
    "empty", "header_only", "truncated", "one_byte_flipped", "appended", "wrong_magic", "other_model",
    "a_pickle", "duplicate_rank", "table_lies", "unsorted",
])
@pytest.mark.parametrize("reader", ["dict", "index"])
def test_damaged_ranks_files_are_refused(damage, reader):
    good = encode_ranks(SMALL, SHA)
    header, payload = good[:_HEADER.size], good[_HEADER.size:]
    ranks_at = 8 * _HEADER.unpack_from(good)[3]  # the ranks follow the (length, count) table
    bad = {
        "empty": b"",
        "header_only": header,
        "truncated": good[: len(good) // 2],
        "one_byte_flipped": good[:-3] + bytes([good[-3] ^ 1]) + good[-2:],
        "appended": good + b"x",
        "wrong_magic": b"NOTRANKS" + good[8:],
        "other_model": encode_ranks(SMALL, hashlib.sha256(b"another model").hexdigest()),
        "a_pickle": pickle.dumps(SMALL),
        # the second rank (b"\x01"'s) set to the first's, the sha256 recomputed
        "duplicate_rank": resealed(good, payload[:ranks_at + 4] + payload[ranks_at:ranks_at + 4]
                                   + payload[ranks_at + 8:]),
        # the first group (length 1) claims 255 tokens, the sha256 recomputed
        "table_lies": resealed(good, payload[:4] + (255).to_bytes(4, "little") + payload[8:]),
        # the first two one-byte tokens swapped, ranks with them: the same dict, out of order
        "unsorted": resealed(good, swapped_pair(good)),
    }[damage]
    if reader == "dict":
        assert decode_ranks(good, SHA) == SMALL
        if damage == "unsorted":  # the dict does not need the order; only the index does
            assert decode_ranks(bad, SHA) == SMALL
            return
        with pytest.raises(RanksFileError):
            decode_ranks(bad, SHA)
    else:
        assert RankIndex(good, SHA).find(list(SMALL) + [b"abd", b"\x00\x00"]) == SMALL
        with pytest.raises(RanksFileError):
            RankIndex(bad, SHA)


def swapped_pair(data: bytes) -> bytes:
    """The payload of ``data`` with its first two tokens (one byte each) and their ranks swapped."""
    count, groups = _HEADER.unpack_from(data)[2:4]
    payload = bytearray(data[_HEADER.size:])
    ranks_at, tokens_at = 8 * groups, 8 * groups + 4 * count
    payload[ranks_at:ranks_at + 8] = payload[ranks_at + 4:ranks_at + 8] + payload[ranks_at:ranks_at + 4]
    payload[tokens_at:tokens_at + 2] = payload[tokens_at + 1:tokens_at + 2] + payload[tokens_at:tokens_at + 1]
    return bytes(payload)


def test_a_damaged_ranks_cache_is_rebuilt(tmp_path, meta_ranks):
    model = llama3_model_file()
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    path = tmp_path / RANKS_FILE
    path.write_bytes(encode_ranks(meta_ranks, sha)[:-1000])  # truncated
    backend = TiktokenBackend(model, tmp_path, sha)
    assert backend.ranks == meta_ranks
    assert read_ranks_file(path, sha) == meta_ranks  # rewritten whole
    stale = TiktokenBackend(model, tmp_path, SHA)  # the cache says another model file: rebuilt for SHA
    assert stale.ranks == meta_ranks and read_ranks_file(path, SHA) == meta_ranks
    with pytest.raises(RanksFileError):
        read_ranks_file(path, sha)


class _CreatesAFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))  # unpickling this creates the file


def test_a_malicious_pickle_in_the_cache_is_never_run(tmp_path, tokenizer):
    cache = tmp_path / "cache"
    folder = cache / "tokenizers" / convert_builtin().name
    shutil.copytree(convert_builtin(), folder, ignore=shutil.ignore_patterns("sftdata-ranks*"))
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_CreatesAFile(marker))
    (folder / "sftdata-ranks.pkl").write_bytes(evil)  # the name the pickle cache had
    (folder / RANKS_FILE).write_bytes(evil)  # and the name of today's ranks file
    code = ("import json; from sftdata.tokenizer import load_tokenizer; t = load_tokenizer(encoder=\"tiktoken\"); "
            f"ids = t.encode_text({SAMPLE!r}); print(json.dumps([t.encoder, ids, t.decode(ids)]))")
    proc = python(code, cache)
    assert not marker.exists(), "the cached pickle was unpickled"
    assert proc.returncode == 0, proc.stderr
    encoder, ids, text = json.loads(proc.stdout)
    assert encoder == "tiktoken" and ids == tokenizer.encode_text(SAMPLE) and text == SAMPLE
    sha = hashlib.sha256(llama3_model_file().read_bytes()).hexdigest()
    assert read_ranks_file(folder / RANKS_FILE, sha) == tokenizer._tiktoken.ranks  # rebuilt, not trusted


def test_hf_encoder_works_on_an_empty_cache(tmp_path, tokenizer):
    cache = tmp_path / "empty-cache"
    code = ("import json; from sftdata.tokenizer import load_tokenizer; "
            "t = load_tokenizer('builtin:llama3', 'hf'); "
            f"print(json.dumps([t.encoder, t.fingerprint, t.header_newline_ids, t.encode_text({SAMPLE!r})]))")
    proc = python(code, cache)
    assert proc.returncode == 0, proc.stderr
    encoder, fingerprint, newline, ids = json.loads(proc.stdout)
    assert encoder == "hf"
    assert (fingerprint, newline, ids) == (tokenizer.fingerprint, tokenizer.header_newline_ids,
                                           tokenizer.encode_text(SAMPLE))
    (folder,) = (cache / "tokenizers").iterdir()
    assert folder.name == convert_builtin().name
    # the description a fresh hf load caches is the one a tiktoken load caches
    assert json.loads((folder / META_FILE).read_text()) == tokenizer.meta
