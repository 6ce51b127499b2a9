"""The local pool defers its chunk fsyncs to the commit; what a deferred marker vouches for is
checked by content on --resume (``storage.atomic``, ``process.ledger.Ledger._content_matches``)."""

from __future__ import annotations

import os

import pytest

from sftdata import commit, config, runner
from sftdata.process.chunk import process_chunk
from sftdata.stages.read.sources import plan_chunks
from sftdata.storage import atomic
from sftdata.storage.layout import MANIFEST_NAME, WORK_DIR
from tests.conftest import write_jsonl
from tests.run.test_resume import ARGS, folder_bytes, sftdata
from tests.synth import generate_broken_lines, generate_records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("deferred")
    records, broken = generate_records(400, seed=41), [b for b, _ in generate_broken_lines(30, seed=42)]
    lines = [line for i, r in enumerate(records) for line in ([r, broken[i // 13 % len(broken)]] if i % 13 == 0 else [r])]
    src = write_jsonl(d / "in.jsonl", lines)
    ref = d / "ref"
    r = sftdata("run", "--input", str(src), "--output", str(ref), "--workers", "2", *ARGS)
    assert r.returncode == 0, r.stderr
    return src, folder_bytes(ref)


def _killed_run(src, out) -> list[int]:
    """A run killed after 5 chunks were reported done; the chunk numbers whose markers exist."""
    r = sftdata("run", "--input", str(src), "--output", str(out), "--workers", "2", *ARGS,
                env={"SFTDATA_FAULT": "chunk_done:5"})
    assert r.returncode != 0 and not (out / MANIFEST_NAME).exists()
    done = sorted(int(p.name[6:12]) for p in (out / WORK_DIR).glob("chunk-??????.json"))
    assert len(done) >= 5
    return done


def _flip_middle_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _resume(src, out):
    r = sftdata("run", "--input", str(src), "--output", str(out), "--workers", "2", "--resume", *ARGS)
    assert r.returncode == 0, r.stderr
    return r


def _a_shard(out, done: list[int]):
    return next(out.glob(f"shard-{done[1]:06d}-*.arrow"))


def _a_quarantine_part(out, done: list[int]):
    parts = [out / WORK_DIR / f"chunk-{i:06d}.quarantine.jsonl" for i in done]
    parts = [p for p in parts if p.exists()]  # a chunk that rejected nothing has no part
    assert parts, "the corpus's broken lines give some done chunk a quarantine part"
    return parts[0]


@pytest.mark.slow
@pytest.mark.parametrize("damaged", [_a_shard, _a_quarantine_part, None], ids=["shard", "quarantine", "intact"])
def test_resume_redoes_exactly_the_done_chunks_whose_bytes_changed(corpus, tmp_path, damaged):
    """Same size, other bytes (what a power cut can leave of a file renamed before it reached the
    disk): the size check alone would commit it; the content check redoes that one chunk, and an
    intact folder keeps every done chunk."""
    src, reference = corpus
    out = tmp_path / "out"
    done = _killed_run(src, out)
    if damaged is not None:
        _flip_middle_byte(damaged(out, done))
    r = _resume(src, out)
    kept = len(done) - (damaged is not None)
    assert f"({kept} resumed from a previous run)" in r.stdout
    assert folder_bytes(out) == reference


@pytest.mark.slow
def test_a_chunk_that_rejects_nothing_writes_no_quarantine_part(tmp_path):
    """A done chunk has a quarantine part exactly when it rejected something (its marker then names
    the part's sha256, else the hash of nothing); a resume keeps the chunks without a part, and
    the folder is the reference's."""
    import orjson

    from sftdata.process.chunk import NO_PART

    broken = [b for b, _ in generate_broken_lines(4, seed=46)]
    src = write_jsonl(tmp_path / "in.jsonl", [*broken[:2], *generate_records(400, seed=47), *broken[2:]])
    r = sftdata("run", "--input", str(src), "--output", str(tmp_path / "ref"), "--workers", "2", *ARGS)
    assert r.returncode == 0, r.stderr
    reference = folder_bytes(tmp_path / "ref")
    out = tmp_path / "out"
    done = _killed_run(src, out)
    markers = {i: orjson.loads((out / WORK_DIR / f"chunk-{i:06d}.json").read_bytes()) for i in done}
    with_part = {i for i in done if (out / WORK_DIR / f"chunk-{i:06d}.quarantine.jsonl").exists()}
    assert with_part == {i for i, m in markers.items() if m["rejected"]}
    assert with_part and with_part != set(done), "the corpus gives done chunks with and without rejections"
    assert all((m["quarantine_sha256"] == NO_PART) == (i not in with_part) for i, m in markers.items())
    r = _resume(src, out)
    assert f"({len(done)} resumed from a previous run)" in r.stdout
    assert folder_bytes(out) == reference


def _counting_fsync(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def _in_process_run(tmp_path, name: str, records: int, chunk_size: str):
    src = write_jsonl(tmp_path / f"{name}.jsonl", generate_records(records, seed=43))
    settings = config.settings_from_dict({}, overrides={"chunk_size": chunk_size, "audit_enabled": False})
    return runner.run_pipeline(settings, [str(src)], tmp_path / name, workers=1)


def test_a_local_run_waits_for_the_disk_a_fixed_number_of_times(tmp_path, monkeypatch):
    """Chunk files are not fsynced one by one: a run of 1 chunk and one of many do the same
    number of fsyncs (the driver's plan and final files), and one sync_folder before the manifest."""
    calls = _counting_fsync(monkeypatch)
    synced_before_manifest: list[bool] = []
    real_sync = atomic.sync_folder

    def sync_folder(path) -> None:
        synced_before_manifest.append(not (tmp_path / "many" / MANIFEST_NAME).exists())
        real_sync(path)

    monkeypatch.setattr(commit, "sync_folder", sync_folder)
    one = _in_process_run(tmp_path, "one", 120, "64MiB")
    n_one = len(calls)
    calls.clear()
    synced_before_manifest.clear()
    many = _in_process_run(tmp_path, "many", 120, "8KiB")
    assert one.chunks_total == 1 and many.chunks_total >= 8
    assert len(calls) == n_one
    assert synced_before_manifest == [True]


def test_the_default_chunk_commit_fsyncs_every_file(tmp_path, monkeypatch):
    """Executors whose workers may be on other machines (Ray) keep the per-chunk fsyncs: shard,
    folder, quarantine part (the chunk rejects a line), folder, marker, folder."""
    src = write_jsonl(tmp_path / "in.jsonl", [*generate_records(30, seed=44), generate_broken_lines(1, seed=45)[0][0]])
    settings = config.settings_from_dict({}, overrides={"audit_enabled": False})
    (chunk,) = plan_chunks([src], 1 << 30)
    out = tmp_path / "out"
    out.mkdir()
    calls = _counting_fsync(monkeypatch)
    res = process_chunk(chunk, settings, str(out))
    assert len(res.shards) == 1 and sum(res.rejected.values()) == 1 and len(calls) == 6
    calls.clear()
    process_chunk(chunk, settings, str(out), sync=False)
    assert calls == []
    clean = write_jsonl(tmp_path / "clean.jsonl", generate_records(30, seed=44))  # no part: shard, marker
    (chunk,) = plan_chunks([clean], 1 << 30)
    res = process_chunk(chunk, settings, str(tmp_path / "clean"))
    assert not res.rejected and not res.has_quarantine_part and len(calls) == 4


def test_sync_folder_without_syncfs_fsyncs_every_file_and_folder(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    for name in ("a", "b", "sub/c"):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(atomic, "_libc", lambda: None)
    calls = _counting_fsync(monkeypatch)
    atomic.sync_folder(tmp_path)
    assert len(calls) == 5  # three files, two folders
    atomic.start_writeback(tmp_path / "a")  # a no-op without the C library, never an error
