"""Pipeline settings: the YAML definition, validated against its JSON Schema, plus flag overrides.

The YAML is loaded with ``yaml.safe_load`` (no object construction) and every schema error is
collected and reported at once, so a user fixes a config in one pass rather than one error per
run. Strategies are normalised to their canonical strings here, once, at the boundary.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

from sftdata.constants import DEFAULT_DATE, DEFAULT_MAX_BLANK, DEFAULT_MAX_DECOMPRESSED, DEFAULT_MAX_LENGTH
from sftdata.errors import UsageError

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "pipeline.schema.json"
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class ConfigError(UsageError):
    """One or more problems in a pipeline definition; ``errors`` lists them all."""

    def __init__(self, errors: list[str], source: str = "pipeline") -> None:
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} problem(s)\n" + "\n".join(f"  - {e}" for e in errors))


def parse_size(value: int | str) -> int:
    """``64MB`` -> 64_000_000, ``1MiB`` -> 1_048_576, ``4096`` -> 4096."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 64MB, 1MiB or a byte count)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


@dataclass
class Settings:
    """Resolved settings of one run. Everything that can change the output bytes is in here."""

    name: str = "pipeline"
    input_format: str = "messages"
    max_record_bytes: int = 64 * 2**20
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED
    max_blank_bytes: int = DEFAULT_MAX_BLANK
    chunk_size: int | str = "auto"
    fields: dict[str, str] = field(default_factory=dict)
    text_without_chat: str = "reject"
    tree_paths: str = "best"  # oasst_tree: the best-ranked path, or every root-to-leaf path
    completion_eos: bool = False
    parts: dict[str, str] = field(default_factory=dict)
    strict_keys: bool = False  # reject records carrying a key sftdata does not read (else: counted)
    dedupe: str = "none"
    template: str = "llama3.2"
    tokenizer: str = "builtin:llama3"
    date_string: str = DEFAULT_DATE
    builtin_tools: list[str] = field(default_factory=list)  # Llama-3.1 built-in tools for every record
    tools_in_user_message: bool = True  # False: tool definitions go into the system message
    train_on: str = "all_assistant"
    max_length: int = DEFAULT_MAX_LENGTH
    truncation: str = "drop"
    packing: str = "none"
    shard_size: int = 256 * 10**6
    audit_enabled: bool = True
    min_trained_fraction: float | None = None
    max_rejected_fraction: float | None = None
    workers: int | str = "auto"

    def output_settings(self) -> dict[str, Any]:
        """The settings that decide the output bytes (not workers, not the executor)."""
        d = asdict(self)
        for key in ("workers", "audit_enabled", "min_trained_fraction", "max_rejected_fraction"):
            d.pop(key)
        return d

    def resolved_workers(self) -> int:
        if self.workers == "auto":
            return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        return int(self.workers)


_STAGE_KEYS = {
    ("read", "format"): "input_format", ("read", "max_record_bytes"): "max_record_bytes",
    ("read", "chunk_size"): "chunk_size", ("read", "fields"): "fields",
    ("read", "text_without_chat"): "text_without_chat", ("read", "tree_paths"): "tree_paths", ("label", "completion_eos"): "completion_eos", ("read", "max_decompressed_bytes"): "max_decompressed_bytes",
    ("read", "max_blank_bytes"): "max_blank_bytes",
    ("validate", "parts"): "parts", ("validate", "dedupe"): "dedupe", ("validate", "strict_keys"): "strict_keys",
    ("render", "template"): "template", ("render", "tokenizer"): "tokenizer",
    ("render", "date_string"): "date_string",
    ("render", "builtin_tools"): "builtin_tools", ("render", "tools_in_user_message"): "tools_in_user_message",
    ("label", "train_on"): "train_on", ("label", "max_length"): "max_length",
    ("label", "truncation"): "truncation", ("label", "packing"): "packing", ("write", "shard_size"): "shard_size",
    ("audit", "enabled"): "audit_enabled", ("audit", "min_trained_fraction"): "min_trained_fraction",
    ("audit", "max_rejected_fraction"): "max_rejected_fraction",
}
_SIZES = ("max_record_bytes", "max_decompressed_bytes", "max_blank_bytes", "shard_size")
# Accepted so that older pipeline files still load, with no effect: the tokenizer alone decides its
# encode path (sftdata.tokenizer.loader: splintr for builtin:llama3, else Hugging Face), and the
# ids never depended on it.
_NO_EFFECT = ("render", "encoder")


@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


_STAGE_OF = {name: path for path, name in _STAGE_KEYS.items()}
MAX_PIPELINE_BYTES = 1 << 20
MIN_CHUNK_BYTES = 1 << 10  # smaller chunks only multiply the files and markers of a run
MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_REPORTED = 50  # problems listed; the rest are counted
MAX_MESSAGE = 300  # characters of one problem (long values are cut)


def _cut(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 20] + f"... ({len(message):,} chars)"


def _with_overrides(doc: dict, overrides: dict[str, Any]) -> dict:
    """Flags are written into the document before validation, so they obey the same schema."""
    doc = copy.deepcopy(doc)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("workers", "name"):
            doc[key] = value
        elif key == "fields" and isinstance(value, dict):  # --field adds to (and beats) read.fields
            read = doc.setdefault("stages", {}).setdefault("read", {})
            read["fields"] = {**(read.get("fields") or {}), **value} if isinstance(read.get("fields"), dict) \
                else dict(value)
        elif key in _STAGE_OF:
            stage, opt = _STAGE_OF[key]
            doc.setdefault("stages", {}).setdefault(stage, {})[opt] = value
        else:
            raise ConfigError([f"unknown setting {key!r}"], "overrides")
    return doc


def settings_from_dict(doc: Any, source: str = "pipeline", overrides: dict[str, Any] | None = None) -> Settings:
    """Validate a pipeline document, apply overrides (flags beat YAML), return Settings."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError([f"the pipeline must be a mapping, found {type(doc).__name__}"], source)
    doc = _with_overrides(doc, overrides or {})
    errors = []
    found = list(islice(_validator().iter_errors(doc), MAX_REPORTED + 1))
    for err in sorted(found[:MAX_REPORTED], key=lambda e: [str(p) for p in e.absolute_path]):
        where = _cut("/".join(str(p) for p in err.absolute_path) or "(top level)")
        key = str(err.absolute_path[-1]) if err.absolute_path else ""
        if err.validator == "anyOf" and key in (*_SIZES, "chunk_size"):
            errors.append(_cut(f"{where}: not a size: {err.instance!r} (use e.g. 64MB, 1MiB or a byte count"
                               f"{', or auto' if key == 'chunk_size' else ''})"))
        else:
            errors.append(_cut(f"{where}: {err.message}"))
    if len(found) > MAX_REPORTED:
        errors.append(f"... and more problems (only the first {MAX_REPORTED} are listed)")
    if errors:
        raise ConfigError(errors, source)
    values: dict[str, Any] = {}
    if "name" in doc:
        values["name"] = doc["name"]
    if "workers" in doc:
        values["workers"] = doc["workers"]
    for stage, opts in (doc.get("stages") or {}).items():
        for key, value in (opts or {}).items():
            if (stage, key) == _NO_EFFECT:
                continue
            values[_STAGE_KEYS[(stage, key)]] = copy.deepcopy(value)
    for key in _SIZES:
        if key in values:
            try:
                values[key] = parse_size(values[key])
            except ValueError as exc:
                errors.append(f"{key}: {exc}")
    if values.get("chunk_size", "auto") != "auto":
        try:
            values["chunk_size"] = parse_size(values["chunk_size"])
        except ValueError as exc:
            errors.append(f"chunk_size: {exc}")
    for key in (*_SIZES, "chunk_size"):  # a zero size breaks the shard name pattern and the chunk plan
        if isinstance(values.get(key), int) and values[key] < 1:
            errors.append(f"{key}: must be at least 1 byte, got {values[key]}")
        elif key == "chunk_size" and isinstance(values.get(key), int) and values[key] < MIN_CHUNK_BYTES:
            errors.append(f"chunk_size: at least {MIN_CHUNK_BYTES} bytes (1KiB), got {values[key]}: a chunk is a "
                          "unit of work with its own files, a few MB to 64MB suits most runs (or auto)")
    errors += _render_errors(values)
    if errors:
        raise ConfigError(errors, source)
    return Settings(**values)


def _render_errors(values: dict[str, Any]) -> list[str]:
    """Render settings the chosen template cannot honour: refused before any record is read."""
    from sftdata.stages.builtin_tools import template_error, valid_name

    template = values.get("template", Settings.template)
    errors = []
    if values.get("builtin_tools"):
        errors += [f"stages/render/builtin_tools: {n!r} is not a tool name (an identifier)"
                   for n in values["builtin_tools"] if not valid_name(n)]
        why = template_error(template, "stages/render/builtin_tools")
        if why:
            errors.append(why)
    if values.get("tree_paths") == "all" and values.get("dedupe") == "exact":
        errors.append("stages/read/tree_paths: all gives several rows per tree, and dedupe: exact finds duplicates "
                      "per input record; use one of them")
    if template == "llama3" and values.get("tools_in_user_message") is False:
        errors.append("stages/render/tools_in_user_message: the llama3 template renders no tools, so where "
                      "they go cannot be chosen; use llama3.1, llama3.2 or llama3.3")
    return errors


@lru_cache(maxsize=1)
def _bounded_loader() -> type:
    """``safe_load`` that refuses alias bombs: at most ``MAX_ALIASES`` aliases per document."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise ConfigError([f"more than {MAX_ALIASES} YAML aliases (*name): a pipeline needs few, if any"])
            return super().compose_node(parent, index)

    return BoundedLoader


def _expanded_size(doc: Any) -> int:
    """Nodes of the document once aliases are expanded, counted without expanding (memoised by id)."""
    sizes: dict[int, int] = {}

    def size(o: Any) -> int:
        if not isinstance(o, (dict, list)):
            return 1
        key = id(o)
        if key not in sizes:
            sizes[key] = 0  # a cycle counts once
            children = list(o.keys()) + list(o.values()) if isinstance(o, dict) else o
            sizes[key] = min(MAX_NODES + 1, 1 + sum(size(c) for c in children))
        return sizes[key]

    return size(doc)


def load_pipeline(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load a pipeline YAML (or defaults when ``path`` is None).

    Bounded on hostile files: at most ``MAX_PIPELINE_BYTES`` of text, ``MAX_ALIASES`` aliases and
    ``MAX_NODES`` values once aliases are expanded, so a 500-byte alias bomb is refused in
    milliseconds instead of expanding to gigabytes during validation.
    """
    if path is None:
        return settings_from_dict({}, "command line", overrides)
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_PIPELINE_BYTES:
            raise ConfigError([f"the file is {size:,} bytes; a pipeline is a few hundred bytes (at most "
                               f"{MAX_PIPELINE_BYTES:,}): is this the right file?"], str(p))
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read {p}: {exc.strerror}"], str(p)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text (byte {exc.start})"], str(p)) from None
    import yaml

    try:
        loader = _bounded_loader()(text)
        try:
            doc = loader.get_single_data()
        finally:
            loader.dispose()
    except ConfigError as exc:
        raise ConfigError(exc.errors, str(p)) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError([_cut(f"not valid YAML: {exc}")], str(p)) from None
    try:
        nodes = _expanded_size(doc)
    except RecursionError:
        raise ConfigError(["the document is nested too deeply"], str(p)) from None
    if nodes > MAX_NODES:
        raise ConfigError([f"the document expands to more than {MAX_NODES:,} values (YAML aliases?); a pipeline "
                           "has a few dozen"], str(p))
    settings = settings_from_dict(doc, str(p), overrides)
    if settings.name == "pipeline":
        settings.name = p.stem
    return settings
