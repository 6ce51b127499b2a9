"""What the data declares about its columns, checked against what they hold, and the column types
the rules can read at all.

Why: a trainer does not read the Arrow columns alone. ``datasets.load_from_disk`` reads the
features in ``dataset_info.json`` and refuses a folder whose features do not match its Arrow
schema (labels declared ``float32``, ids declared ``string``), whose ``dataset_info.json`` is not
JSON, or that has none; a Parquet file written by ``datasets`` carries the same features in its
``huggingface`` metadata. Such data must not pass, so each mismatch is a ``declared_features``
violation. A column whose own type cannot hold token ids (strings, booleans, nested lists,
floats) is no data the rules apply to: `column_type_problem` says why, and the reader refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

INFO_NAME = "dataset_info.json"


def _value_type(dtype: Any) -> pa.DataType | None:
    aliases = {"float": "float32", "double": "float64", "bool": "bool", "boolean": "bool"}
    try:
        return pa.type_for_alias(aliases.get(dtype, dtype)) if isinstance(dtype, str) else None
    except ValueError:
        return None


def feature_type(feature: Any) -> pa.DataType | None:
    """The Arrow type a ``datasets`` feature (as JSON) stands for; None for one this check does not know."""
    if isinstance(feature, list) and len(feature) == 1:  # [Value(...)]: a list
        inner = feature_type(feature[0])
        return pa.list_(inner) if inner is not None else None
    if not isinstance(feature, dict):
        return None
    kind = feature.get("_type")
    if kind == "Value":
        return _value_type(feature.get("dtype"))
    if kind == "ClassLabel":
        return pa.int64()
    if kind in ("Sequence", "List", "LargeList"):
        inner = feature_type(feature.get("feature"))
        if inner is None:
            return None
        length = feature.get("length", -1)
        if kind == "LargeList":
            return pa.large_list(inner)
        return pa.list_(inner, length) if isinstance(length, int) and length >= 0 else pa.list_(inner)
    if kind is None and all(isinstance(k, str) for k in feature):  # a dict of features: a struct
        fields = [(k, feature_type(v)) for k, v in feature.items()]
        return pa.struct(fields) if all(t is not None for _, t in fields) else None
    return None


def feature_text(feature: Any) -> str:
    """A feature as ``datasets`` spells it: ``Sequence(Value('float32'))``."""
    if isinstance(feature, list) and len(feature) == 1:
        return f"[{feature_text(feature[0])}]"
    if not isinstance(feature, dict):
        return repr(feature)
    kind = feature.get("_type")
    if kind == "Value":
        return f"Value({feature.get('dtype')!r})"
    if kind in ("Sequence", "List", "LargeList"):
        return f"{kind}({feature_text(feature.get('feature'))})"
    return str(kind or "a dict of features")


def _shape(t: pa.DataType) -> str:
    """A type without its list field names (``datasets`` writes ``item``, Parquet ``element``)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"{str(t).split('<')[0]}<{_shape(t.value_type)}>"
    return str(t)


def features_problems(features: Any, schema: pa.Schema, declared_by: str, used: frozenset[str] = frozenset()) -> list[str]:
    """How the declared features differ from ``schema`` (what ``datasets`` would refuse). A
    feature this check cannot map to an Arrow type is let be, unless the audit reads its column
    (``used``): an Image or Audio feature cannot be token ids."""
    if not isinstance(features, dict):
        return [f"{declared_by} has no features object"]
    out = []
    for name in schema.names:
        if name not in features:
            out.append(f"column {name!r} ({schema.field(name).type}) is not declared in {declared_by}")
    for name, feature in features.items():
        if name not in schema.names:
            out.append(f"{declared_by} declares column {name!r}, which the data does not have")
            continue
        want, have = feature_type(feature), schema.field(name).type
        if want is None and name in used:
            out.append(f"{declared_by} declares {name!r} as {feature_text(feature)}, not a list of integers")
        elif want is not None and _shape(want) != _shape(have):
            out.append(f"{declared_by} declares {name!r} as {feature_text(feature)} ({_shape(want)}), the data "
                       f"holds {_shape(have)}")
    return out


def dataset_info_problems(info_path: str, schema: pa.Schema, used: frozenset[str] = frozenset()) -> list[str]:
    """``dataset_info.json`` of a datasets folder against one of its Arrow files' schema."""
    path = Path(info_path)
    if not path.is_file():
        return [f"no {INFO_NAME} in {path.parent}: datasets.load_from_disk refuses the folder"]
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            return [f"{path}: a JSON {type(info).__name__}, not an object: datasets.load_from_disk refuses it"]
        if info.get("features") is None:  # datasets then takes the features from the Arrow schema
            return []
        return features_problems(info["features"], schema, INFO_NAME, used)
    except (OSError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return [f"{path}: not readable JSON ({why}): datasets.load_from_disk refuses the folder"]


def parquet_metadata_problems(schema: pa.Schema, used: frozenset[str] = frozenset()) -> list[str]:
    """The features a Parquet file written by ``datasets`` declares in its ``huggingface`` metadata."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return []
    plain = pa.schema([schema.field(n) for n in schema.names])
    try:
        return features_problems(json.loads(raw)["info"]["features"], plain, "the Parquet huggingface metadata", used)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        return [f"the Parquet huggingface metadata is not readable ({type(exc).__name__}: {exc})"]


def column_type_problem(t: pa.DataType, role: str) -> str | None:
    """Why a column of type ``t`` cannot be read as ``role`` (ids, labels, mask, lengths), or None."""
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return f"has type {t}, not a list per row"
    v = t.value_type
    if pa.types.is_integer(v):
        return None
    if role == "mask" and (pa.types.is_boolean(v) or pa.types.is_floating(v)):
        return None
    what = {"ids": "token ids", "labels": "labels (token ids or -100)", "mask": "loss-mask values (0 or 1)",
            "lengths": "lengths or positions (integers)"}[role]
    return f"holds {t}, not {what}"
