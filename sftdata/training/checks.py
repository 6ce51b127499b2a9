"""Pre-flight checks: refuse, before any step, data or a model that cannot be trained on as written.

Why: a wrong mask or a mismatched tokenizer does not crash training, it trains a subtly wrong model.
Each check here turns one such mistake into a ``TrainError`` naming it: a folder without a
finished manifest, shards failing the mask audit, a tokenizer whose fingerprint differs from the
manifest's, token ids beyond the model's vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sftdata.constants import IGNORE_INDEX
from sftdata.training.settings import TrainError
from sftdata.training.tiny_model import TINY_SPEC

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def check_output_dir(output_dir: Path, data_dir: Path) -> None:
    """``run``'s folder rules for ``--output-dir`` (``sftdata.output``): not empty, ``/``, home, the
    current folder, nor a folder holding or inside the data; a non-empty folder must be an earlier
    training run's (its ``data_manifest.json``). Train deletes nothing; the trainer rewrites its files."""
    from sftdata.errors import OutputFolderError, TrainRefused
    from sftdata.output import TRAIN, check_folder, check_location
    from sftdata.storage import Folder

    try:
        check_location(str(output_dir), [data_dir], [str(data_dir)], option="--output-dir")
        check_folder(Folder(output_dir), resume=False, overwrite=True, kind=TRAIN)
    except OutputFolderError as exc:
        raise TrainRefused(str(exc)) from None


def check_audit(data_dir: Path, skip: bool) -> str:
    """Run the mask audit (``sftdata.audit.run_audit``); refuse on failure unless skipped."""
    if skip:
        return "skipped (--skip-audit)"
    try:
        from sftdata.audit.run import run_audit
    except ImportError as exc:
        raise TrainError(f"cannot audit {data_dir}: the audit module is unavailable ({exc}); "
                         "pass --skip-audit to train without the audit") from exc
    try:
        # one process: the trainer's process may already hold torch's threads, which a fork must not copy
        report = run_audit(data_dir, workers=1)
    except Exception as exc:  # AuditError: the folder cannot be audited at all
        raise TrainError(f"the mask audit of {data_dir} could not run: {exc} (--skip-audit overrides)") from exc
    if not report.ok:
        raise TrainError(f"the shards in {data_dir} fail the mask audit; not training on them "
                         f"(--skip-audit overrides):\n{report.summary_text()}")
    return "passed"


def token_id_range(ds: Any, column: str) -> tuple[int, int]:
    """(min, max) of a list column, computed by Arrow over the mapped shards; labels skip -100.

    One Arrow kernel per record batch, so memory stays bounded by a batch, not the dataset.
    """
    import pyarrow.compute as pc

    lows, highs = [0], [-1]
    for chunk in ds.data.column(column).chunks:
        flat = pc.list_flatten(chunk)
        if column == "labels":
            flat = pc.filter(flat, pc.not_equal(flat, IGNORE_INDEX))
        low, high = pc.min_max(flat).as_py().values()
        if low is not None:
            lows.append(low)
            highs.append(high)
    return min(lows[1:] or lows), max(highs)


def resolve_tokenizer(model_spec: str, manifest: dict) -> tuple[Callable[[], Any], str]:
    """The tokenizer to train and save with, once its fingerprint matches the manifest's.

    The model's own tokenizer wins when one is saved with it, else the manifest's spec is used;
    either way its ids must be the shards' ids. Returns a loader (built-in tokenizers load lazily)
    and where the tokenizer came from.
    """
    from sftdata.tokenizer import BUILTIN_LLAMA3, TokenizerError, fingerprint_of, load_tokenizer

    info, own = manifest.get("tokenizer") or {}, None
    local = Path(model_spec).is_dir()
    if model_spec != TINY_SPEC and (not local or any((Path(model_spec) / f).is_file() for f in _TOKENIZER_FILES)):
        from transformers import AutoTokenizer

        try:
            own = AutoTokenizer.from_pretrained(model_spec)
        except Exception:  # a hub id without a tokenizer, or none reachable: use the manifest's
            own = None
    if own is not None:
        fingerprint, source, loader = fingerprint_of(own), f"the tokenizer saved with {model_spec}", lambda: own
    else:
        spec = BUILTIN_LLAMA3 if model_spec == TINY_SPEC else info.get("spec") or BUILTIN_LLAMA3
        try:
            tok = load_tokenizer(spec)
        except TokenizerError as exc:
            raise TrainError(f"{model_spec} has no tokenizer and the manifest's cannot be loaded: {exc}") from exc
        source = f"{TINY_SPEC}'s {spec}" if model_spec == TINY_SPEC else f"the manifest's {spec!r}"
        fingerprint, source, loader = tok.fingerprint, f"{source} tokenizer", lambda: tok.hf
    if fingerprint != info.get("fingerprint"):
        raise TrainError(f"tokenizer fingerprint mismatch: the shards were tokenized with {info.get('spec')!r} "
                         f"({info.get('fingerprint')}), but {source} has {fingerprint}: its ids mean other text")
    return loader, source


def check_vocabulary(vocab: int, ids: tuple[int, int], labels: tuple[int, int], pad_id: int, what: str) -> None:
    """Every id in the shards, and the pad id, must index a row of the model's embedding."""
    low, high = min(ids[0], labels[0], pad_id), max(ids[1], labels[1], pad_id)
    if low < 0 or high >= vocab:
        raise TrainError(f"the vocabulary of {what} has {vocab} entries but the shards use token ids {low}..{high}; "
                         "use a model whose vocabulary holds the shards' tokenizer (or resize its embeddings)")

