"""One processing pass (issue 30): the first pass stages each chunk's processed rows in the work dir,
the main pass writes the routed ones from there, with the same bytes as processing the chunk again."""

from __future__ import annotations

from pathlib import Path

import pytest

import sftdata.mix.chunk as mix_chunk_module
from sftdata.api import settings_and_recipe
from sftdata.mix.run import run_mix
from sftdata.mix.staged import read_rows, rows_path, settings_key
from tests.conftest import snapshot
from tests.mix.recipe_data import build


def _run(recipe: Path, out: Path) -> None:
    settings, mix = settings_and_recipe(str(recipe))
    run_mix(settings, mix, str(out), workers=1)


@pytest.mark.parametrize("drops", [True, False])
def test_main_pass_writes_from_the_staged_rows(tmp_path, monkeypatch, drops):
    """In one process (one worker): the main pass never processes a chunk from its input again, and
    the staged rows are gone once the run is committed; also where nothing can be dropped (no dedupe,
    no decontamination: the staged rows keep no original lines)."""
    (tmp_path / "in").mkdir()
    recipe = build(tmp_path / "in")
    if not drops:
        text = recipe.read_text().replace("  validate: {dedupe: exact}\n", "")
        recipe.write_text(text[:text.index("  decontaminate:")] + text[text.index("stages:"):])
    reference = tmp_path / "ref"
    _run(recipe, reference)

    staged, real_stage = [], mix_chunk_module.stage

    def spy(chunk, *args):
        staged.append(chunk.index)
        return real_stage(chunk, *args)

    monkeypatch.setattr(mix_chunk_module, "stage", spy)
    out = tmp_path / "out"
    _run(recipe, out)
    assert sorted(staged) == sorted(set(staged)), "the main pass processed a chunk from its input again"
    assert snapshot(out) == snapshot(reference)
    assert not list(out.rglob("*.rows.arrow")) and not (out / "train" / "_chunks").exists()


def test_staged_rows_of_other_settings_or_bytes_are_not_trusted(tmp_path, monkeypatch):
    """Rows staged with other settings or from other input bytes are refused (the chunk is staged
    again from its input, then written from those rows), and the bytes are the same either way."""
    (tmp_path / "in").mkdir()
    recipe = build(tmp_path / "in")
    settings, mix = settings_and_recipe(str(recipe))
    seen = []
    real_read = mix_chunk_module.read_rows

    def spy(location, index, digest, key):
        if not rows_path(location, index).exists():  # the first pass, before it stages the chunk
            return real_read(location, index, digest, key)
        staged = real_read(location, index, digest, key)
        assert staged is not None  # this run's own rows are read back
        assert real_read(location, index, digest, key + "x") is None
        assert real_read(location, index, digest, settings_key(settings, raw=False)) is None  # lines kept
        assert real_read(location, index, "blake2b:other", key) is None
        if index % 2 and index not in seen:  # every other chunk staged again from its input: same bytes
            seen.append(index)
            return None
        return staged

    monkeypatch.setattr(mix_chunk_module, "read_rows", spy)
    out = tmp_path / "out"
    run_mix(settings, mix, str(out), workers=1)
    monkeypatch.undo()
    reference = tmp_path / "ref"
    _run(recipe, reference)
    assert len(seen) > 1 and snapshot(out) == snapshot(reference)


def test_a_missing_or_torn_staging_file_is_not_read(tmp_path):
    location = str(tmp_path / "f")
    assert read_rows(location, 3, "d", "k") is None
    path = rows_path(location, 3)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"ARROW1\x00\x00 torn")
    assert read_rows(location, 3, "d", "k") is None


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
