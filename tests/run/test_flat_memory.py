"""What a run holds per row stays out of memory (issue 31): bfd packing spills a chunk's
conversations, a worker sends its per-row lists as bytes, and the driver's index reads them back
exactly as it read the lists."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pyarrow as pa

from sftdata.commit import index_rows
from sftdata.process.chunk import ChunkResult
from sftdata.process.dedupe import RowIndex
from sftdata.process.tasks import ProcessChunk
from sftdata.runner import _plan
from sftdata.stages.pack import PACKED_SCHEMA, Packer, bfd_bins
from tests.conftest import settings, write_jsonl
from tests.synth import generate_records


class Rows:
    """A ShardWriter stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, *args, **extra) -> None:
        self.rows.append((args, extra))


def items(n: int, seed: int = 3) -> list[tuple[str, np.ndarray, np.ndarray, str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randrange(1, 300)
        ids = np.array([rng.randrange(128256) for _ in range(k)], dtype=np.int32)
        labels = np.where(np.arange(k) % 3 == 0, -100, ids).astype(np.int32)
        out.append((f"id-{i}-é{'x' * rng.randrange(5)}", ids, labels, f"{i:032x}", f"{i * 7:032x}"))
    return out


def reference_rows(conversations, max_length: int) -> list[tuple]:
    """The packed rows as the in-memory packer made them before the spill."""
    out = []
    for b in bfd_bins([len(c[1]) for c in conversations], max_length):
        m = [conversations[i] for i in b]
        lengths = np.array([len(x[1]) for x in m], dtype=np.int32)
        out.append(((m[0][0], np.concatenate([x[1] for x in m]), np.concatenate([x[2] for x in m]), m[0][3], m[0][4]),
                    {"position_ids": np.concatenate([np.arange(n, dtype=np.int32) for n in lengths]),
                     "seq_lengths": lengths, "packed_ids": [x[0] for x in m],
                     "content_hashes": [x[3] for x in m], "prompt_hashes": [x[4] for x in m]}))
    return out


def same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def test_packer_rows_are_those_of_the_in_memory_packer():
    conversations = items(700)
    packer, sink = Packer(1024), Rows()
    for c in conversations:
        packer.add(*c)
    assert packer.count == 700
    packer.write(sink)
    expected = reference_rows(conversations, 1024)
    assert len(sink.rows) == len(expected) < 700
    assert same(sink.rows, expected)
    for (args, extra) in sink.rows:  # rows the shard writer accepts as they are
        assert args[1].dtype == np.int32 and extra["seq_lengths"].sum() == len(args[1])
    assert PACKED_SCHEMA.field("seq_lengths").type == pa.list_(pa.int32())


def test_packer_keeps_the_tokens_on_disk_not_in_memory():
    """2,000 conversations of 1,000 tokens are 16 MB of ids and labels; the packer holds a few bytes
    of each (its lengths and file offsets) until ``write``."""
    ids = np.arange(1000, dtype=np.int32)
    with Packer(4096) as packer:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(2000):
                packer.add(f"r{i}", ids.copy(), ids.copy(), "h" * 32, "p" * 32)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert packer.count == 2000
    assert grown < 1 << 20, f"the packer held {grown:,} bytes for 2,000 conversations"


def test_worker_results_carry_no_per_row_lists_and_index_the_same(tmp_path):
    """A chunk's result crosses to the driver as bytes (``ChunkResult.compact``); the driver's index
    gives the duplicates, repeated ids, truncated ids and dropped rows it gave from the lists."""
    recs = generate_records(120, seed=9)
    recs += [dict(r, id=f"again-{i}") for i, r in enumerate(recs[:30])]  # duplicates by content
    recs += [dict(r, id=recs[0]["id"]) for r in generate_records(5, seed=10)]  # a repeated id
    src = write_jsonl(tmp_path / "in.jsonl", recs)
    s = settings(max_length=96, truncation="truncate", chunk_size=16 << 10)
    _, chunks, _ = _plan(s, [str(src)])
    assert len(chunks) > 2
    drops = {chunks[0].index: {line: f"first-{line}" for line in range(1, 7)}}  # as dedupe: exact gives them
    task = ProcessChunk(s, str(tmp_path / "out"), drops, run_id="r", sync=False)
    compact = [task(c) for c in chunks]
    for res in compact:
        assert res.hashes == [] and res.truncated_ids == [] and res.packed_lists is not None
    # the same results as lists: the markers the worker wrote (what a resume reads)
    import orjson

    listed = [ChunkResult.from_json(orjson.loads((tmp_path / "out" / "_chunks" / f"chunk-{c.index:06d}.json")
                                                 .read_bytes())) for c in chunks]
    assert sum(len(r.truncated_ids) for r in listed) > 10
    assert sum(len(r.hashes) for r in listed) == sum(r.records_written for r in compact)
    truncated = {r.index: list(r.truncated_ids) for r in listed}
    dropped = {r.index: list(r.dropped_duplicates) for r in listed}
    assert len(dropped[chunks[0].index]) >= 3
    with RowIndex() as a, RowIndex() as b:
        for res in compact:
            index_rows(a, res)
            assert res.packed_lists is None
        for res in listed:
            index_rows(b, res)
        assert list(a.duplicates()) == list(b.duplicates()) and len(list(a.duplicates())) >= 10
        assert list(a.repeated_ids()) == list(b.repeated_ids()) == [recs[0]["id"]]
        for c in chunks:
            assert list(a.truncated(c.index)) == list(b.truncated(c.index)) == truncated[c.index]
            assert list(a.dropped(c.index)) == list(b.dropped(c.index)) == dropped[c.index]


def test_a_bfd_chunk_is_packed_through_the_spill(tmp_path):
    """A chunk with ``packing: bfd`` writes packed rows (every conversation once, in bins of at most
    ``max_length``), whether the packer holds one conversation or many."""
    import pyarrow.ipc as ipc

    src = write_jsonl(tmp_path / "in.jsonl", generate_records(80, seed=12))
    s = settings(packing="bfd", max_length=2048)
    _, chunks, _ = _plan(s, [str(src)])
    res = ProcessChunk(s, str(tmp_path / "out"), {}, run_id="r", sync=False)(chunks[0])
    tables = [ipc.open_stream(pa.OSFile(str(tmp_path / "out" / sh.file))).read_all() for sh in res.shards]
    table = pa.concat_tables(tables)
    assert table.schema.equals(PACKED_SCHEMA)
    lengths = [n for row in table.column("seq_lengths").to_pylist() for n in row]
    assert len(lengths) == res.records_written > table.num_rows > 0
    assert sum(lengths) == res.tokens and max(map(sum, table.column("seq_lengths").to_pylist())) <= 2048
    one = write_jsonl(tmp_path / "one.jsonl", generate_records(1, seed=12))
    _, chunks, _ = _plan(s, [str(one)])
    res = ProcessChunk(s, str(tmp_path / "out1"), {}, run_id="r", sync=False)(chunks[0])
    assert ipc.open_stream(pa.OSFile(str(tmp_path / "out1" / res.shards[0].file))).read_all().schema.equals(PACKED_SCHEMA)


def test_row_runs_are_the_runs_of_the_sorted_triples():
    """``row_runs`` (sorted positions, no tuple per row) writes what sorting the triples wrote,
    ties, prefixes and non-ASCII ids included."""
    from sftdata.process.dedupe import row_runs, run_bytes

    rng = random.Random(8)
    names = ["a", "ab", "a\\tb", "é", "e\u0301", "\x00", "日本", "zz", "a ", "", "ab\x00"]
    hashes = [(f"{rng.randrange(40):032x}", rng.choice(names) if rng.random() < 0.5 else f"id-{i}")
              for i in range(3000)]
    by_hash = run_bytes(sorted((h, pos, rid) for pos, (h, rid) in enumerate(hashes)))
    by_id = run_bytes(sorted((rid.encode().hex(), pos, None) for pos, (_h, rid) in enumerate(hashes)))
    assert row_runs(hashes) == (by_hash, by_id)


def test_a_chunks_rejections_go_to_its_part_as_found(tmp_path):
    """4,000 rejected records of 2 KB each are 8 MB of quarantine lines (each keeps its original
    text); the worker writes them to the part as they come instead of holding them, and the part
    is the one the in-memory list gave (its bytes, its sha256 in the result)."""
    import hashlib

    import orjson

    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"bad-{i}", "messages": "x" * 2000} for i in range(4000)])
    s = settings(chunk_size=64 << 20)
    _, chunks, _ = _plan(s, [str(src)])
    assert len(chunks) == 1
    task = ProcessChunk(s, str(tmp_path / "out"), {}, run_id="r", sync=False)
    task.warm()
    tracemalloc.start()
    try:
        res = task(chunks[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    part = (tmp_path / "out" / "_chunks" / f"chunk-{chunks[0].index:06d}.quarantine.jsonl").read_bytes()
    assert res.records_read == len(part.splitlines()) == sum(res.rejected.values()) == 4000
    assert res.quarantine_sha256 == hashlib.sha256(part).hexdigest()
    assert all(orjson.loads(q)["original"].startswith('{"id": "bad-') for q in part.splitlines())
    assert peak < 4 << 20, f"the chunk held {peak:,} bytes at its peak"


def test_hash_run_is_the_run_of_sorted_hashes():
    from sftdata.process.dedupe import hash_run, run_bytes, sorted_hashes

    rng = random.Random(4)
    records = [(i * 2 + 1, f"{rng.randrange(50):032x}", rng.choice(["a", "é", "a\tb", f"id-{i}"])) for i in range(2000)]
    expected = run_bytes((h, pos, (line, rid)) for h, pos, line, rid in sorted_hashes(records))
    assert hash_run(records) == expected


def test_auto_chunks_stop_growing_above_a_gib_of_input():
    """A worker holds one chunk: its size must not follow the input's past the cap (issue 31)."""
    from sftdata.stages.read.jsonl import MAX_AUTO_CHUNK, auto_chunk_size

    assert auto_chunk_size(1000) == 256 << 10
    assert auto_chunk_size(640 << 20) == 10 << 20  # about 64 chunks
    assert auto_chunk_size(64 * MAX_AUTO_CHUNK) == MAX_AUTO_CHUNK
    assert auto_chunk_size(1 << 40) == MAX_AUTO_CHUNK == 16 << 20
