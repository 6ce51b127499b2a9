"""One processing pass (issue 30): the first pass stages each chunk's processed rows in the work dir,
the main pass writes the routed ones from there, with the same bytes as processing the chunk again."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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


_ID = st.text(alphabet=st.sampled_from(list("ab-1_") + ["\u00fc", "\u65e5", "\u00e9"]), min_size=1, max_size=16)
_ROW = st.tuples(_ID, st.lists(st.integers(0, 128_255), min_size=1, max_size=12), st.data())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_ROW, min_size=4, max_size=30), picks=st.data(),
       shard_size=st.sampled_from([200, 450, 1_000, 1 << 20]))
@example(rows=[("\u65e5" * 6, [5], None)] * 6, picks=None, shard_size=200)  # bytes would cut 3 + 3, characters 4 + 2
def test_gathered_rows_are_the_bytes_of_rows_added_one_by_one(tmp_path_factory, rows, picks, shard_size):
    """The main pass writes a split's rows by gathering the staged columns (ids, hashes, tokens,
    labels, the source) with numpy; the shards are byte for byte those ``ShardWriter.add`` writes
    row by row for the same rows, copies ``<id>#rK`` included, non-ASCII ids (characters, not
    bytes, cut the batches) included, and so are the counts."""
    import hashlib
    from types import SimpleNamespace

    import numpy as np

    from sftdata.constants import IGNORE_INDEX
    from sftdata.mix.routed import _write_rows
    from sftdata.mix.staged import RowsWriter
    from sftdata.process.chunk import ChunkResult
    from sftdata.stages.write.arrow import MIX_SCHEMA, ShardWriter

    d = tmp_path_factory.mktemp("gather")
    staged_rows, expected = RowsWriter(raw=False), []
    for line, (rid, ids, data) in enumerate(rows):
        ids = np.array(ids, dtype=np.int32)
        trained = np.array(data.draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids))) if data
                           else [True] * len(ids))
        trained[-1] = True  # a row trains at least one token
        labels = np.where(trained, ids, IGNORE_INDEX).astype(np.int32)
        hashes = (hashlib.md5(rid.encode()).hexdigest(), hashlib.md5(rid.encode()[::-1]).hexdigest())
        conv = SimpleNamespace(id=rid, unknown_keys=None, has_special_text=False)
        enc = SimpleNamespace(input_ids=ids, labels=labels, trained=int(trained.sum()), truncated=False)
        staged_rows.encoded(line, b"", conv, enc, hashes)
        expected.append((rid, ids, labels, hashes))
    staged = staged_rows.write(d / "rows.arrow", "digest", "key", 0)
    left_out = picks.draw(st.sets(st.integers(0, len(rows) - 1), max_size=len(rows) // 3)) if picks else set()
    chosen = [i for i in range(len(rows)) if i not in left_out]  # a route takes most of a chunk's rows
    repeated = picks is not None and picks.draw(st.booleans())  # a repeated source, or not
    copies = np.array(picks.draw(st.lists(st.integers(1, 3), min_size=len(chosen), max_size=len(chosen)))
                      if repeated else [1] * len(chosen))
    gathered, added = ChunkResult(0), ChunkResult(0)
    (d / "gathered").mkdir()
    (d / "added").mkdir()
    with ShardWriter(d / "gathered", 0, shard_size, MIX_SCHEMA, sync=False) as writer:
        _write_rows(gathered, writer, staged, np.array(chosen), copies, "src")
        gathered.shards = writer.finish()
    with ShardWriter(d / "added", 0, shard_size, MIX_SCHEMA, sync=False) as writer:
        for i, k in zip(chosen, copies.tolist(), strict=True):
            rid, ids, labels, (ch, ph) = expected[i]
            for c in range(1, k + 1):
                writer.add(rid if c == 1 else f"{rid}#r{c}", ids, labels, ch, ph, source="src")
        added.shards = writer.finish()
    assert [s.to_json() for s in gathered.shards] == [s.to_json() for s in added.shards]
    assert all((d / "gathered" / s.file).read_bytes() == (d / "added" / s.file).read_bytes() for s in added.shards)
    assert gathered.records_written == int(copies.sum())
    assert gathered.tokens == sum(len(expected[i][1]) * k for i, k in zip(chosen, copies.tolist(), strict=True))
