"""The built-in tokenizer's cache proves itself: tampered, damaged or odd files are rebuilt, never used.

Whoever can write the cache folder must not change the ids a run writes, the fingerprint it
records or what it refuses, and a damaged cache must never end a run in a traceback or a hang.
Each test tampers with a copy of the cache (``SFTDATA_CACHE`` moved to ``tmp_path``) the way a
hostile test did, then loads or runs: the findings of issue 27. The tests use only the public
names, so each of them also runs (and fails) against the code before the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from sftdata.tokenizer import cache_dir, convert_builtin, llama3_model_file, load_tokenizer
from sftdata.tokenizer import loader as _loader
from sftdata.tokenizer.cache import META_FILE

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = "Hello, world! 你好 🎉 <|eot_id|> 12345\n\n  tabs\tand 'll the and"
KNOWN = "sha256:13e3b0f4a48f32b67d897579619eaaad165b98eca7c49177a562d85c70fddb03"
UNTOUCHED: dict[str, str] = {}  # the cache the tests copy, for reference runs


@pytest.fixture
def cache(tmp_path, monkeypatch, tokenizer):
    """A private copy of the built-in tokenizer's cache folder, in use for this test."""
    folder = tmp_path / "cache" / "tokenizers" / convert_builtin().name
    shutil.copytree(convert_builtin(), folder)
    UNTOUCHED["cache"] = str(cache_dir())
    monkeypatch.setenv("SFTDATA_CACHE", str(tmp_path / "cache"))
    _loader._load_tokenizer.cache_clear()
    load_tokenizer()  # the copy's description made (or checked) as this version keeps it
    _loader._load_tokenizer.cache_clear()
    yield folder
    _loader._load_tokenizer.cache_clear()


def meta_file(folder: Path) -> Path:
    return folder / META_FILE


def edit_meta(folder: Path, **changes) -> None:
    path = meta_file(folder)
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def fresh():
    _loader._load_tokenizer.cache_clear()
    return load_tokenizer()


def python(code: str, cache_root: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "SFTDATA_CACHE": str(cache_root), "PYTHONPATH": str(ROOT)}

    def limit_memory() -> None:  # a link to /dev/zero read whole must end in MemoryError, not the machine's
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit_memory)


def test_an_empty_cache_is_filled_and_gives_the_same_tokenizer(tmp_path, tokenizer):
    """...without tiktoken: it is only the tests' oracle."""
    code = ("import sys; sys.modules['tiktoken'] = None; "
            "import json; from sftdata.tokenizer import load_tokenizer; t = load_tokenizer(); "
            f"print(json.dumps([t.fingerprint, t.header_newline_ids, t.encode_text({SAMPLE!r}), t.meta]))")
    proc = python(code, tmp_path / "empty", timeout=600)
    assert proc.returncode == 0, proc.stderr
    fingerprint, newline, ids, meta = json.loads(proc.stdout)
    assert (fingerprint, newline, ids) == (KNOWN, tokenizer.header_newline_ids, tokenizer.encode_text(SAMPLE))
    assert meta == tokenizer.meta


def test_a_zeroed_fingerprint_is_not_recorded(cache):
    edit_meta(cache, fingerprint="sha256:" + "0" * 64)
    assert fresh().fingerprint == KNOWN
    assert json.loads(meta_file(cache).read_text())["fingerprint"] == KNOWN  # rewritten


def test_a_lowered_max_token_bytes_rejects_nothing_valid(cache):
    from sftdata.stages.encode import _MAX_TOKEN_CHARS, PieceEncoder
    from sftdata.stages.render import TEXT, TRAINED

    edit_meta(cache, max_token_bytes=1)
    _MAX_TOKEN_CHARS.clear()
    tok = fresh()
    text = "word " * 40  # 200 characters, 42 tokens with "hi"
    enc = PieceEncoder(tok, max_length=64, truncation="drop").encode([(TEXT, "hi"), (TRAINED, text)])
    assert enc.input_ids.tolist() == tok.encode_text("hi") + tok.encode_text(text)
    _MAX_TOKEN_CHARS.clear()


@pytest.mark.parametrize("field, value", [
    ("ids", {"<|begin_of_text|>": 5}), ("vocab_size", 7), ("header_newline_ids", [198, 198]),
    ("common_tokens", {"882": "6e6f"}), ("special_tokens", {"128000": "<|eot_id|>"}), ("vocab_size", "128256"),
])
def test_an_edited_description_is_rebuilt(cache, tokenizer, field, value):
    edit_meta(cache, **{field: value})
    tok = fresh()
    assert tok.meta[field] == tokenizer.meta[field]
    assert (tok.bos_id, tok.vocab_size, tok.header_newline_ids) == (128000, 128256, tokenizer.header_newline_ids)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "a_list", "deep", "not_utf8"])
def test_a_damaged_description_is_rebuilt_without_a_traceback(cache, tokenizer, damage):
    path = meta_file(cache)
    good = path.read_bytes()
    path.write_bytes({"truncated": good[: len(good) // 2], "garbage": b"\x00garbage{", "empty": b"",
                      "a_list": b"[1, 2]", "deep": b"[" * 100_000, "not_utf8": b"\xff\xfe{}"}[damage])
    tok = fresh()
    assert tok.meta == tokenizer.meta and tok.encode_text(SAMPLE) == tokenizer.encode_text(SAMPLE)


def _swap_vocab(path: Path, a: str, b: str) -> None:
    state = json.loads(path.read_text())
    vocab = state["model"]["vocab"]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    path.write_text(json.dumps(state))


@pytest.mark.slow
def test_a_swapped_vocabulary_in_the_conversion_is_made_again(cache, tokenizer):
    _swap_vocab(cache / "tokenizer.json", "Hello", "Ġworld")
    tok = fresh()
    assert tok.fingerprint == KNOWN
    assert tok.backend.encode("Hello world", add_special_tokens=False).ids == [9906, 1917]
    assert tok.hf.encode("Hello world", add_special_tokens=False) == [9906, 1917]


def _ranks_v2(ranks: dict[bytes, int], sha256: str) -> bytes:
    """A ranks cache file in the format the code before issue 27's fix read (``sftdata-ranks-v2.bin``)."""
    groups: dict[int, list[tuple[bytes, int]]] = {}
    for token, rank in sorted(ranks.items()):
        groups.setdefault(len(token), []).append((token, rank))
    order, table = [], []
    for length in sorted(groups):
        table += [length, len(groups[length])]
        order += groups[length]
    payload = (struct.pack(f"<{len(table)}I", *table) + struct.pack(f"<{len(order)}I", *[r for _, r in order])
               + b"".join(t for t, _ in order))
    header = struct.pack("<8sIIIxxxx32s32s", b"SFTRANKS", 2, len(order), len(groups), bytes.fromhex(sha256),
                         hashlib.sha256(payload).digest())
    return header + payload


def _small_run(cache_root: Path, tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    from tests.synth import generate_records, write_jsonl

    tmp_path.mkdir(exist_ok=True)
    write_jsonl(tmp_path / "in.jsonl", generate_records(20, seed=4))
    args = ["run", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out"), "--no-audit", "-w", "1"]
    code = f"from sftdata.cli import main; main({args!r})"
    return python(code, cache_root, timeout)


def _shard_ids(out: Path) -> list[list[int]]:
    import pyarrow as pa

    rows = []
    for shard in sorted(out.glob("shard-*.arrow")):
        with pa.memory_map(str(shard)) as src:
            rows += pa.ipc.open_stream(src).read_all().column("input_ids").to_pylist()
    return rows


def test_swapped_ranks_with_a_recomputed_hash_change_no_id(cache, tmp_path, tokenizer):
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(llama3_model_file()))
    ranks[b" the"], ranks[b" and"] = ranks[b" and"], ranks[b" the"]
    sha = hashlib.sha256(llama3_model_file().read_bytes()).hexdigest()
    (cache / "sftdata-ranks-v2.bin").write_bytes(_ranks_v2(ranks, sha))
    proc = _small_run(cache.parent.parent, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _shard_ids(tmp_path / "out")
    assert rows and tokenizer.encode_text(" the and")[0] in {i for r in rows for i in r}
    assert rows == _expected_rows(tmp_path, tokenizer)


def _expected_rows(tmp_path: Path, tokenizer) -> list[list[int]]:
    """The rows of the same run on the untouched cache the test copied."""
    return _shard_ids(_small_run(Path(UNTOUCHED["cache"]), tmp_path / "reference").check_returncode()
                      or tmp_path / "reference" / "out")


@pytest.mark.parametrize("odd", ["fifo", "dev_zero"])
@pytest.mark.parametrize("name", ["sftdata-ranks-v2.bin", "meta"])
def test_a_cache_file_that_is_not_a_regular_file_is_never_read(cache, tmp_path, tokenizer, odd, name):
    path = meta_file(cache) if name == "meta" else cache / name
    if path.exists():
        path.unlink()
    if odd == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    proc = _small_run(cache.parent.parent, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _shard_ids(tmp_path / "out") == _expected_rows(tmp_path, tokenizer)


@pytest.mark.slow
def test_a_conversion_file_that_is_a_fifo_is_made_again(cache, tokenizer):
    (cache / "tokenizer.json").unlink()
    os.mkfifo(cache / "tokenizer.json")
    tok = fresh()
    assert tok.fingerprint == KNOWN and (cache / "tokenizer.json").is_file()
    text = "Hello, world! 你好 🎉 12345"
    assert tok.backend.encode(text, add_special_tokens=False).ids == tokenizer.encode_text(text)
