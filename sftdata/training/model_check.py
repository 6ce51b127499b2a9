"""A local model folder is checked before anything is built from it (``train --model``, ``plan --model``).

Why: ``from_pretrained`` trusts the folder. A ``config.json`` with ``vocab_size: 2**31`` or
``num_hidden_layers: 10**6`` makes it allocate for tens of seconds before a ``MemoryError`` (or a
``RuntimeError`` traceback); a pickled ``pytorch_model.bin`` is code that ``torch.load`` runs; an
``auto_map`` names Python files of the folder to import. Each is refused here with one line
(``ModelRefused``, exit 2), from the folder's text alone: no torch, no transformers, no weights.

What is checked: ``config.json`` is a bounded regular file holding a JSON object; the sizes that
decide the parameter count are positive integers, and the weights they describe fit the memory
available now (``psutil``); no ``auto_map`` unless ``trust_remote_code`` was set on purpose; the
weights are safetensors (the loader is also told to read only those). A hub id is left to
``transformers`` (its own ``trust_remote_code`` gate), as is ``builtin:tiny-llama3``.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from sftdata.errors import TrainError, UsageError

MAX_CONFIG_BYTES = 1 << 20
PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
SIZE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size")
HALF = {"bfloat16", "float16", "bf16", "fp16", "half"}


class ModelRefused(TrainError, UsageError):
    """A model folder refused before anything is built from it (exit 2)."""


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of ``folder`` as a dict: a regular file of at most ``MAX_CONFIG_BYTES``."""
    path = folder / "config.json"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ModelRefused(f"{path}: not a regular file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ModelRefused(f"{path}: {info.st_size:,} bytes; a model config is a few KB (at most "
                               f"{MAX_CONFIG_BYTES:,})")
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ModelRefused(f"{folder}: no config.json, so not a model folder") from None
    except (ValueError, RecursionError) as exc:
        raise ModelRefused(f"{path}: not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(doc, dict):
        raise ModelRefused(f"{path}: a model config is a JSON object, found {type(doc).__name__}")
    return doc


def estimated_parameters(config: dict[str, Any], where: str) -> int:
    """Parameters of a decoder of this shape: embeddings (twice unless tied) and, per layer,
    attention (4 x hidden^2) and MLP (3 x hidden x intermediate). An estimate, on the large side
    of the usual Llama-like layouts; enough to tell a model from a bomb."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    sizes: dict[str, int] = {}
    for key in SIZE_KEYS:
        value = text.get(key, config.get(key))
        if key == "intermediate_size" and value is None:
            value = 4 * sizes["hidden_size"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelRefused(f"{where}: {key} must be a positive integer, found {json.dumps(value)[:60]}")
        sizes[key] = value
    hidden, tied = sizes["hidden_size"], bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings")))
    embeddings = sizes["vocab_size"] * hidden * (1 if tied else 2)
    return embeddings + sizes["num_hidden_layers"] * (4 * hidden * hidden + 3 * hidden * sizes["intermediate_size"])


def bytes_per_parameter(dtype: Any, config: dict[str, Any]) -> int:
    """As the loader will hold them: float32 unless ``model_init_kwargs`` asks for a dtype
    (``auto``: the config's ``torch_dtype``/``dtype``)."""
    if dtype == "auto":
        dtype = config.get("torch_dtype") or config.get("dtype")
    return 2 if dtype is not None and str(dtype).removeprefix("torch.") in HALF else 4


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_model_folder(spec: str, *, trust_remote_code: bool = False, dtype: Any = None,
                       available: int | None = None) -> None:
    """Refuse (``ModelRefused``) a local model folder that is unsafe or too large to build here.
    ``available``: bytes of memory to compare with (default: what ``psutil`` says is available)."""
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        if spec.startswith(("/", "./", "../", "~")) or folder.exists():  # a path, not a hub id
            raise ModelRefused(f"{spec}: {'not a folder' if folder.exists() else 'no such model folder'}")
        return
    where = str(folder / "config.json")
    config = read_config(folder)
    for doc, name in ((config, "auto_map"), (config.get("text_config"), "text_config.auto_map")):
        if isinstance(doc, dict) and "auto_map" in doc and not trust_remote_code:
            raise ModelRefused(f"{where}: {name} asks to run the folder's own Python code; sftdata does not "
                               "(set trust_remote_code: true in the training config to allow it, at your risk)")
    weights = {p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(".safetensors")}
    pickled = sorted({p.name for pattern in PICKLED for p in folder.glob(pattern)})
    if pickled and not weights:
        raise ModelRefused(f"{folder}: its weights are pickled ({', '.join(pickled[:3])}), which loading would run "
                           "as code; sftdata loads safetensors weights only: convert them (save_pretrained with "
                           "safe_serialization=True)")
    params = estimated_parameters(config, where)
    per = bytes_per_parameter(dtype, config)
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    if params * per > available:
        raise ModelRefused(f"{where}: describes about {params:,} parameters ({_gib(params * per)} of weights), more "
                           f"than the {_gib(available)} of memory available here; is this config right?")
