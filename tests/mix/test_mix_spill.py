"""The main pass's bookkeeping (issue 30, the mix's wall time): each folder's row index spills every
chunk's runs into one file (``sftdata.mix.spill``) and the workers hand their row lists over packed
(``ChunkResult.compact``), with the lists, duplicates and repeated ids the plain ``RowIndex`` gives."""

from __future__ import annotations

import random

from sftdata.api import settings_and_recipe
from sftdata.commit import index_rows
from sftdata.mix import run as mix_run
from sftdata.mix.spill import SPILL_NAME, SpilledRowIndex
from sftdata.process.chunk import ChunkResult
from sftdata.process.dedupe import RowIndex
from tests.mix.recipe_data import build


def _chunks(n: int = 9, rows: int = 60) -> dict[int, list[tuple[str, str]]]:
    """(content hash, id) rows per chunk: hashes and ids repeat within and across chunks, some ids
    share a prefix, one has non-ASCII characters, one chunk is empty."""
    rng = random.Random(5)
    out = {c: [(f"{rng.randrange(40):064x}", f"id-{rng.randrange(150)}{'é' if rng.random() < .05 else ''}")
               for _ in range(rows)] for c in range(n)}
    out[4] = []
    return out


def _result(c: int, rows: list[tuple[str, str]]) -> ChunkResult:
    res = ChunkResult(c, hashes=list(rows), truncated_ids=[rid for _h, rid in rows[:c]],
                      dropped_duplicates=[(rid, "first") for _h, rid in rows[c:c + 2]])
    return res.compact() if c % 2 else res  # packed (a worker's) and as lists (a marker's)


def _filled(index: RowIndex, chunks: dict[int, list[tuple[str, str]]]) -> RowIndex:
    for c in (5, 0, 8, 2, 4, 7, 1, 6, 3):  # in completion order, not chunk order
        index_rows(index, _result(c, chunks[c]))
    return index


def test_spilled_index_gives_what_the_row_index_gives(tmp_path):
    """Same duplicates (order included), repeated ids, truncated and dropped lists as ``RowIndex``,
    chunks added out of order, packed or not, an empty one and one added again (a resumed chunk:
    its new rows count, the old ones are gone)."""
    chunks = _chunks()
    again = [(h, rid + "-again") for h, rid in chunks[2][:30]]
    with _filled(RowIndex(), {**chunks, 2: again}) as plain, _filled(SpilledRowIndex(), chunks) as spilled:
        index_rows(spilled, _result(2, again))
        duplicates = list(plain.duplicates())
        assert len(duplicates) > 100 and any(rid.endswith("-again") for rid, _ in duplicates)
        assert list(spilled.duplicates()) == duplicates
        assert list(spilled.repeated_ids()) == list(plain.repeated_ids()) != []
        for c in chunks:
            assert list(spilled.truncated(c)) == list(plain.truncated(c))
            assert list(spilled.dropped(c)) == list(plain.dropped(c))


def test_spilled_index_writes_one_file_per_kind_not_per_chunk():
    """The point of it: however many chunks, each kind of run is one spill file (the plain index
    writes one per chunk), and closing removes them."""
    with _filled(SpilledRowIndex(), _chunks()) as index:
        for runs in (index.by_hash, index.by_id):
            assert [p.name for p in runs.folder.iterdir() if not p.name.endswith((".truncated", ".dropped"))] \
                == [SPILL_NAME]
        folders = [index.by_hash.folder, index.by_id.folder]
    assert not any(f.exists() for f in folders)


def test_a_mix_indexes_packed_results_in_spilled_indexes(tmp_path, monkeypatch):
    """A run's main pass: every folder's index is a ``SpilledRowIndex`` and every chunk's result
    arrives packed from the worker (the driver sorts no row)."""
    (tmp_path / "in").mkdir()
    settings, recipe = settings_and_recipe(str(build(tmp_path / "in")))
    seen, real = [], mix_run.index_rows

    def spy(index, result):
        seen.append((type(index), result.packed_lists is not None, result.hashes == []))
        return real(index, result)

    monkeypatch.setattr(mix_run, "index_rows", spy)
    mix_run.run_mix(settings, recipe, str(tmp_path / "out"), workers=2)
    assert len(seen) > 10 and set(seen) == {(SpilledRowIndex, True, True)}
