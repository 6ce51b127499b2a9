"""The on-disk cache of the built-in tokenizer: the Hugging Face conversion and its checked description.

Why: converting Meta's ``tokenizer.model`` to a Hugging Face fast tokenizer takes seconds, and
describing it (hashing 128k tokens and 280k merges for the fingerprint) a second more, so both
are done once per machine and kept under ``~/.cache/sftdata`` (``$SFTDATA_CACHE``). The folder
is named after the sha256 of the model file, so a new ``llama-models`` release gets a new folder.
Layout of ``tokenizers/llama3-<sha256[:16]>/``: ``tokenizer.json`` and ``tokenizer_config.json``
(the conversion) and ``sftdata-meta-v5.json`` (the description, see ``meta``). Nothing decoded
from the model file is cached: the engine builds from the model file itself.

Every load reads the cached files as regular files only (``storage.opener.read_regular``: a FIFO or a link
to ``/dev/zero`` is damage, never read forever) and checks the description against the model file
and the conversion (``meta.problem_of``). Whatever fails is made again from the model file: the
conversion and the description both, and a fresh one that still fails is refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from sftdata.storage.opener import read_regular
from sftdata.tokenizer.fingerprint import fingerprint_of
from sftdata.tokenizer.llama3 import (
    KNOWN_FINGERPRINTS,
    LLAMA3_PATTERN,
    LLAMA3_SPECIAL_TOKENS,
    TokenizerError,
    llama3_model_file,
)
from sftdata.tokenizer.meta import META_FILE, build_meta, problem_of
from sftdata.tokenizer.splintr_backend import ModelSource, build_splintr

CONVERSION_FILES = {"tokenizer_json": "tokenizer.json", "tokenizer_config": "tokenizer_config.json"}
CONVERSION_LIMIT = 256 << 20  # bytes: the conversion is 17 MB
META_LIMIT = 1 << 20  # bytes: the description is 10 KB

__all__ = ["META_FILE", "cache_dir", "checked_cache", "convert_builtin", "load_conversion"]


def cache_dir() -> Path:
    """``$SFTDATA_CACHE``, else ``sftdata`` under ``$XDG_CACHE_HOME`` (default ``~/.cache``)."""
    base = os.environ.get("SFTDATA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sftdata"
    )
    return Path(base)


def _convert(source: ModelSource, out: Path) -> None:
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class Converter(TikTokenConverter):
        def load_tiktoken_bpe(self, _url: str) -> dict[bytes, int]:  # the checked bytes, not the path again
            return source.ranks()

    backend = Converter(
        vocab_file=str(source.path), pattern=LLAMA3_PATTERN, extra_special_tokens=LLAMA3_SPECIAL_TOKENS
    ).converted()
    # Like Meta's checkpoints: BOS is added by `add_special_tokens=True`, never by our pipeline.
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", backend.token_to_id("<|begin_of_text|>"))],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
    ).save_pretrained(out)


def convert_builtin(model_file: Path | None = None) -> Path:
    """The cached Hugging Face conversion of Meta's BPE file (made on first use)."""
    return _conversion(ModelSource(model_file or llama3_model_file()))[0]


def _conversion(source: ModelSource, force: bool = False) -> tuple[Path, bool]:
    """(the conversion's folder, whether it was made now). ``force``: made again, its files replaced
    one by one, each atomically, and the description removed."""
    target = cache_dir() / "tokenizers" / f"llama3-{source.sha256[:16]}"
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):
        raise TokenizerError(f"{target} is not a folder sftdata made (a link or a file): remove it")
    if mode is not None and not force and os.path.lexists(target / "tokenizer.json"):
        return target, False
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    _convert(source, tmp)
    import shutil  # here only: it imports bz2, lzma and zlib on every start

    if mode is None:
        try:
            os.replace(tmp, target)
            return target, True
        except OSError:  # another process won the race; theirs is identical
            pass
    else:
        for name in os.listdir(tmp):
            os.replace(tmp / name, target / name)
        for stale in (META_FILE,):
            if os.path.lexists(target / stale):
                os.unlink(target / stale)
    shutil.rmtree(tmp, ignore_errors=True)
    return target, True


def load_conversion(folder: Path, name: str = "tokenizer_json") -> bytes | None:
    """The bytes of one conversion file, or None if it is missing or not a plain regular file."""
    try:
        return read_regular(folder / CONVERSION_FILES[name], CONVERSION_LIMIT, follow_links=False)
    except OSError:  # missing, not a regular file (UnsafeFileError), too large
        return None


def _read_meta(folder: Path) -> Any:
    try:
        return json.loads(read_regular(folder / META_FILE, META_LIMIT, follow_links=False))
    except (OSError, ValueError, RecursionError):  # missing, not a regular file, too large, not JSON
        return None


def _write_meta(folder: Path, meta: dict) -> None:
    """Atomically, through a new file (never through a link or a FIFO left under the temp name). A
    cache that cannot be written is no error: the checked description is used, and made next time."""
    tmp = folder / f"{META_FILE}.tmp{os.getpid()}"
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(meta))
        os.replace(tmp, folder / META_FILE)
    except OSError:
        pass


def _backend(data: bytes) -> Any:
    from tokenizers import Tokenizer as _Backend

    return _Backend.from_str(data.decode("utf-8"))


def _attempt(folder: Path, source: ModelSource, made: bool) -> tuple[dict | None, str]:
    """(the checked description, "") or (None, why not) for the conversion in ``folder``."""
    data = {name: load_conversion(folder, name) for name in CONVERSION_FILES}
    if any(v is None for v in data.values()):
        return None, "a conversion file is missing or not a regular file"
    shas = {name: hashlib.sha256(v).hexdigest() for name, v in data.items()}  # type: ignore[arg-type]
    meta = None if made else _read_meta(folder)
    if meta is None and not made and source.sha256 not in KNOWN_FINGERPRINTS:
        return None, "no readable description, and no listed fingerprint to check the conversion with"
    if meta is None:
        try:
            backend = _backend(data["tokenizer_json"])  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - a damaged conversion: made again
            return None, f"tokenizer.json does not load ({type(exc).__name__})"
        meta = build_meta(backend, build_splintr(source), source, shas)
        made = True
    problem = problem_of(meta, source, shas)
    if problem is None and source.sha256 not in KNOWN_FINGERPRINTS and not made:
        # no listed fingerprint for this model file: recompute it from the conversion
        if fingerprint_of(_backend(data["tokenizer_json"])) != meta["fingerprint"]:  # type: ignore[arg-type]
            problem = "the fingerprint is not the conversion's"
    if problem is None and made:
        _write_meta(folder, meta)
    return (meta, "") if problem is None else (None, problem)


def checked_cache(source: ModelSource) -> tuple[Path, dict]:
    """(the conversion's folder, its checked description) for the model file ``source``.

    Anything that fails a check (a damaged, foreign or edited file, or one that is not a regular
    file) is made again from the model file, once; a fresh conversion that still fails is refused.
    """
    folder, made = _conversion(source)
    meta, problem = _attempt(folder, source, made)
    if meta is None:
        folder, _ = _conversion(source, force=True)
        meta, again = _attempt(folder, source, True)
        if meta is None:
            raise TokenizerError(f"the built-in tokenizer's cache in {folder} was damaged ({problem}) and made "
                                 f"again, but still fails its checks ({again}); is llama-models' tokenizer.model intact?")
    return folder, meta
