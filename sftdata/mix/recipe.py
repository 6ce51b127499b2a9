"""A mix recipe: the ``seed``, ``sources`` and ``split`` keys of a pipeline file (docs/mixing.md).

The pipeline schema validates them with the rest of the file (every problem at once); this module
turns them into plain values, checks what a schema cannot (unique names, settings a mix cannot
honour) and gives each source its own ``Settings`` (its ``format`` and ``fields`` over the shared
stages).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sftdata.config import ConfigError, Settings, load_document, settings_from_dict


@dataclass(frozen=True)
class Take:
    """How much of a source: ``kind`` all | records | fraction | tokens | repeat, and its value."""

    kind: str = "all"
    value: float = 0

    def to_json(self) -> dict:
        return {"all": True} if self.kind == "all" else {self.kind: self.value}


@dataclass(frozen=True)
class Source:
    name: str
    inputs: tuple[str, ...]
    settings: Settings  # the shared stages with this source's format and field map
    take: Take = Take()


@dataclass(frozen=True)
class Split:
    eval_kind: str = ""  # records | fraction | tokens; "" for no held-out split
    eval_value: float = 0
    per_source: bool = False
    decontaminate: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.eval_kind)


@dataclass(frozen=True)
class Recipe:
    seed: int
    sources: tuple[Source, ...]
    split: Split = field(default_factory=Split)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]


def _take(doc: dict | None) -> Take:
    if not doc:
        return Take()
    (kind, value), = doc.items()
    return Take(kind, value)


def recipe_from_dict(doc: Any, source: str = "pipeline", overrides: dict[str, Any] | None = None
                     ) -> tuple[Settings, Recipe | None]:
    """The shared ``Settings`` and, when the document names ``sources``, its ``Recipe``."""
    settings = settings_from_dict(doc, source, overrides)
    if not isinstance(doc, dict) or "sources" not in doc:
        extra = [k for k in ("seed", "split") if isinstance(doc, dict) and k in doc]
        if extra:
            raise ConfigError([f"{extra[0]}: only a mix has one; name its inputs under `sources:`"], source)
        return settings, None
    errors = []
    names = [s["name"] for s in doc["sources"]]
    errors += [f"sources: the name {n!r} is used twice; each source needs its own" for n in sorted(set(names))
               if names.count(n) > 1]
    if settings.packing != "none":
        errors.append("stages/label/packing: a mix writes one row per conversation (with its source); pack "
                      "after mixing, or run without packing")
    if settings.tree_paths == "all":
        errors.append("stages/read/tree_paths: all gives several rows per record; a mix selects records, so use best")
    if overrides and overrides.get("fields"):
        errors.append("--field: a mix maps fields per source (sources[].fields)")
    if errors:
        raise ConfigError(errors, source)
    sources = []
    for s in doc["sources"]:
        inputs = (s["input"],) if isinstance(s["input"], str) else tuple(s["input"])
        own = replace(settings, input_format=s.get("format", settings.input_format),
                      fields=dict(s.get("fields") or settings.fields))
        sources.append(Source(s["name"], inputs, own, _take(s.get("take"))))
    split_doc = doc.get("split") or {}
    kind, value = next(iter((split_doc.get("eval") or {"": 0}).items()))
    split = Split(kind, value, bool(split_doc.get("per_source", False)), tuple(split_doc.get("decontaminate") or ()))
    return settings, Recipe(int(doc.get("seed", 0)), tuple(sources), split)


def load_recipe(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None
                ) -> tuple[Settings, Recipe | None]:
    """``load_pipeline`` that also returns the file's mix recipe (None for a plain pipeline)."""
    if path is None:
        return settings_from_dict({}, "command line", overrides), None
    p = Path(path)
    settings, recipe = recipe_from_dict(load_document(p), str(p), overrides)
    if settings.name == "pipeline":
        settings.name = p.stem
        if recipe is not None:
            recipe = replace(recipe, sources=tuple(replace(s, settings=replace(s.settings, name=p.stem))
                                                   for s in recipe.sources))
    return settings, recipe
