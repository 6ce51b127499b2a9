"""The runs' bookkeeping (issue 30, the mix's wall time): a row index spills every chunk's runs into
one file per kind (``process.dedupe.SortedRuns``), and a mix's workers hand their row lists over
packed (``ChunkResult.compact``); the lists, duplicates and repeated ids are those a dict and a
Counter over every row give."""

from __future__ import annotations

import random
from collections import Counter

from sftdata.api import settings_and_recipe
from sftdata.commit import index_rows
from sftdata.mix import run as mix_run
from sftdata.process.chunk import ChunkResult
from sftdata.process.dedupe import SPILL_NAME, RowIndex
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


def _reference(chunks: dict[int, list[tuple[str, str]]]) -> tuple[list, list]:
    """The duplicates (grouped by hash in hash order, input order within a group) and the repeated
    ids (sorted) of every row, from a sort and a Counter over all of them."""
    rows = sorted((h, c, pos, rid) for c, rs in chunks.items() for pos, (h, rid) in enumerate(rs))
    first: dict[str, str] = {}
    dups = []
    for h, _c, _pos, rid in rows:
        if h in first:
            dups.append((rid, first[h]))
        else:
            first[h] = rid
    ids = Counter(rid for rs in chunks.values() for _h, rid in rs)
    return dups, sorted((rid for rid, n in ids.items() if n > 1), key=str.encode)


def test_the_index_gives_the_lists_of_every_row(tmp_path):
    """Duplicates (order included), repeated ids, truncated and dropped lists of every row, chunks
    added out of order, packed or not, an empty one, and one added again (a resumed chunk: its new
    rows count, the old ones are gone)."""
    chunks = _chunks()
    again = [(h, rid + "-again") for h, rid in chunks[2][:30]]
    with _filled(RowIndex(), chunks) as index:
        index_rows(index, _result(2, again))
        final = {**chunks, 2: again}
        duplicates, repeated = _reference(final)
        assert len(duplicates) > 100 and any(rid.endswith("-again") for rid, _ in duplicates)
        assert list(index.duplicates()) == duplicates
        assert list(index.repeated_ids()) == repeated != []
        for c, rows in final.items():
            assert list(index.truncated(c)) == [rid for _h, rid in rows[:c]]
            assert list(index.dropped(c)) == [(rid, "first") for _h, rid in rows[c:c + 2]]


def test_the_index_writes_one_file_per_kind_not_per_chunk():
    """However many chunks, each kind of run is one spill file, and closing removes them."""
    with _filled(RowIndex(), _chunks()) as index:
        for runs in (index.by_hash, index.by_id):
            assert [p.name for p in runs.folder.iterdir() if not p.name.endswith((".truncated", ".dropped"))] \
                == [SPILL_NAME]
        folders = [index.by_hash.folder, index.by_id.folder]
    assert not any(f.exists() for f in folders)


def test_a_mix_indexes_packed_results(tmp_path, monkeypatch):
    """A run's main pass: every chunk's result arrives packed from the worker (the driver sorts no row)."""
    (tmp_path / "in").mkdir()
    settings, recipe = settings_and_recipe(str(build(tmp_path / "in")))
    seen, real = [], mix_run.index_rows

    def spy(index, result):
        seen.append((type(index), result.packed_lists is not None, result.hashes == []))
        return real(index, result)

    monkeypatch.setattr(mix_run, "index_rows", spy)
    mix_run.run_mix(settings, recipe, str(tmp_path / "out"), workers=2)
    assert len(seen) > 10 and set(seen) == {(RowIndex, True, True)}
