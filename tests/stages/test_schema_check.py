"""The checked-in pipeline validator is current and judges every document as a fresh compile does."""

from __future__ import annotations

import copy

import fastjsonschema
import pytest
import yaml

from sftdata import _pipeline_check, schema_check
from sftdata.config import SCHEMA_PATH

PIPELINES = sorted(p for p in (SCHEMA_PATH.parents[2] / "pipelines").glob("*.yaml")
                   if "stages" in (yaml.safe_load(p.read_text()) or {}))  # not the trainer's settings file


def test_the_generated_module_matches_the_schema_file():
    assert _pipeline_check.SCHEMA_SHA256 == schema_check.schema_sha256(), \
        "schemas/pipeline.schema.json changed: run `python -m sftdata.schema_check` and commit the result"
    assert schema_check.pipeline_validator() is _pipeline_check.validate


def _documents() -> list[object]:
    docs: list[object] = [{}, {"version": 1}, [], None, "x", {"version": 2}, {"name": 3}]
    for path in PIPELINES:
        doc = yaml.safe_load(path.read_text())
        docs.append(doc)
        for stage, key, bad in (("render", "template", "llama9"), ("label", "max_length", -1),
                                ("write", "shard_size", "lots"), ("render", "encoder", "splintr"),
                                ("render", "encoder", "fast"), ("validate", "dedupe", "fuzzy"),
                                ("read", "chunk_size", "12 MB"), ("render", "date_string", "today")):
            broken = copy.deepcopy(doc)
            broken.setdefault("stages", {}).setdefault(stage, {})[key] = bad
            docs.append(broken)
        docs.append({**doc, "unknown_key": True})
    return docs


def _verdict(validate, doc) -> bool:
    try:
        validate(copy.deepcopy(doc))
        return True
    except fastjsonschema.JsonSchemaException:
        return False


def test_the_generated_validator_agrees_with_a_fresh_compile():
    assert PIPELINES
    fresh = fastjsonschema.compile(__import__("json").loads(SCHEMA_PATH.read_text()))
    docs = _documents()
    verdicts = [_verdict(_pipeline_check.validate, d) for d in docs]
    assert verdicts == [_verdict(fresh, d) for d in docs]
    assert any(verdicts) and not all(verdicts)  # the set holds valid and invalid documents


def test_a_stale_module_is_not_used(monkeypatch):
    schema_check.pipeline_validator.cache_clear()
    monkeypatch.setattr(_pipeline_check, "SCHEMA_SHA256", "0" * 64)
    try:
        validate = schema_check.pipeline_validator()
        assert validate is not _pipeline_check.validate
        assert not _verdict(validate, {"version": 2}) and _verdict(validate, {})
    finally:
        schema_check.pipeline_validator.cache_clear()


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_shipped_pipeline_passes(path):
    assert _verdict(_pipeline_check.validate, yaml.safe_load(path.read_text()))
