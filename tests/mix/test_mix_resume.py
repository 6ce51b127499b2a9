"""``--resume`` of a mix keeps the chunks its killed run had staged (issue 30): the first pass
processes only the others, and the resumed folder's bytes equal an uninterrupted run's."""

from __future__ import annotations

from pathlib import Path

import pytest

import sftdata.mix.chunk as mix_chunk_module
from sftdata.api import settings_and_recipe
from sftdata.mix.run import plan_mix, run_mix
from sftdata.storage.layout import chunk_rows
from tests.conftest import sftdata_cli, snapshot
from tests.mix.recipe_data import build


def _run(recipe: Path, out: Path, **kwargs) -> None:
    settings, mix = settings_and_recipe(str(recipe))
    run_mix(settings, mix, str(out), workers=1, **kwargs)


@pytest.mark.parametrize("fault,staged", [("scan_done:5", 5), ("chunk_done:4", None)])
def test_resume_processes_only_the_chunks_not_staged(tmp_path, monkeypatch, fault, staged):
    """Killed in the first pass (after 5 chunks) or in the main pass (every chunk staged): the
    resumed first pass processes exactly the chunks without a complete staged file (one of them
    torn on purpose), and the folder is byte for byte the uninterrupted run's."""
    (tmp_path / "in").mkdir()
    recipe = build(tmp_path / "in")
    reference = tmp_path / "ref"
    _run(recipe, reference)
    dest = tmp_path / "out"
    r = sftdata_cli("run", recipe, "--output", dest, "--workers", "1", "--no-audit", env={"SFTDATA_FAULT": fault})
    assert r.returncode != 0
    settings, mix = settings_and_recipe(str(recipe))
    chunks = plan_mix(settings, mix)[1]
    kept = [c.index for c in chunks if (dest / "train" / chunk_rows(c.index)).exists()]
    assert len(kept) == (staged if staged is not None else len(chunks))
    torn = dest / "train" / chunk_rows(kept[1])
    torn.write_bytes(torn.read_bytes()[:200])  # not a complete file: processed again
    processed = []
    real = mix_chunk_module.stage

    def spy(chunk, *args):
        processed.append(chunk.index)
        return real(chunk, *args)

    monkeypatch.setattr(mix_chunk_module, "stage", spy)
    _run(recipe, dest, resume=True)
    assert sorted(processed) == sorted({c.index for c in chunks} - set(kept) | {kept[1]})
    assert snapshot(dest) == snapshot(reference)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
