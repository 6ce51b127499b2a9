"""Pipeline documents are checked against schemas/pipeline.schema.json: every shipped pipeline
passes, and each broken setting is refused with a problem naming its place in the document."""

from __future__ import annotations

import copy

import pytest
import yaml

from sftdata.config import SCHEMA_PATH, ConfigError, load_pipeline, settings_from_dict

PIPELINES = sorted(p for p in (SCHEMA_PATH.parents[2] / "pipelines").glob("*.yaml")
                   if "stages" in (yaml.safe_load(p.read_text()) or {}))  # not the trainer's settings file
BROKEN = [("render", "template", "llama9"), ("label", "max_length", -1), ("write", "shard_size", "lots"),
          ("render", "encoder", "fast"), ("validate", "dedupe", "fuzzy"), ("read", "chunk_size", "12 parsecs"),
          ("render", "date_string", "today")]


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_shipped_pipeline_passes(path):
    assert load_pipeline(path).template


@pytest.mark.parametrize("stage,key,bad", BROKEN, ids=lambda v: str(v))
def test_a_broken_setting_is_refused_naming_its_place(stage, key, bad):
    doc = copy.deepcopy(yaml.safe_load(PIPELINES[0].read_text()))
    doc.setdefault("stages", {}).setdefault(stage, {})[key] = bad
    with pytest.raises(ConfigError) as info:
        settings_from_dict(doc, "p.yaml")
    assert len(info.value.errors) == 1 and info.value.errors[0].startswith(f"stages/{stage}/{key}:"), info.value.errors


def test_every_problem_is_reported_at_once():
    doc = {"version": 2, "unknown_key": True, "stages": {"render": {"template": "llama9"}}}
    with pytest.raises(ConfigError) as info:
        settings_from_dict(doc, "p.yaml")
    assert len(info.value.errors) == 3, info.value.errors
