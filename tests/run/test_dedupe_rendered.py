"""``dedupe: exact`` in one processing pass (``sftdata.process.rendered``): the first pass renders
each record once, the main pass writes from what it rendered, and the bytes are those of the
hash-then-process-from-the-input way (the fallback a chunk takes when its rendered records cannot
be trusted)."""

from __future__ import annotations

import filecmp
import random
from pathlib import Path

import orjson
import pytest

from sftdata.process import rendered as rendered_mod
from sftdata.process.record import RecordProcessor
from sftdata.process.rendered import Rendered
from sftdata.process.tasks import RenderChunk
from sftdata.runner import _plan, run_pipeline
from sftdata.stages.render import Llama3Renderer
from sftdata.storage.layout import chunk_rendered, chunk_rendered_marker, is_ours, leftovers_of
from tests.conftest import settings
from tests.synth import generate_records


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Exact copies near and far, broken records, records over max_length, records without an id,
    unknown keys, special-token text, and records whose rendering fails ("BOOM", see ``boom``)."""
    rng = random.Random(8)
    base = generate_records(60, seed=8)
    lines = []
    for i in range(1500):
        rec = orjson.loads(orjson.dumps(rng.choice(base)))
        rec["id"] = f"r{i}"
        if i % 37 == 0:
            lines.append(b'{"messages": "broken"}')
            continue
        if i % 10 == 3:
            del rec["id"]
        if i % 41 == 0:
            rec = {"id": f"r{i}", "messages": [{"role": "user", "content": "word " * 12000},
                                               {"role": "assistant", "content": "ok"}]}
        if i % 23 == 0:
            rec = {"id": f"r{i}", "messages": [{"role": "user", "content": f"say <|eot_id|> {i % 3}"},
                                               {"role": "assistant", "content": "done"}]}
        if i % 31 == 0:
            rec = {"id": f"r{i}", "messages": [{"role": "user", "content": f"BOOM {i % 2}"},
                                               {"role": "assistant", "content": "x"}]}
        if i % 29 == 0:
            rec["note"] = "an unknown key"
        lines.append(orjson.dumps(rec))
    path = tmp_path_factory.mktemp("rendered") / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture
def boom(monkeypatch):
    """Rendering fails for a conversation holding "BOOM" (an internal error of the renderer)."""
    real = Llama3Renderer.render

    def render(self, conv):
        if any("BOOM" in (m.content or "") for m in conv.messages):
            raise RuntimeError("boom")
        return real(self, conv)

    monkeypatch.setattr(Llama3Renderer, "render", render)


def same_folders(a: Path, b: Path) -> list[str]:
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    return [n for n in names if not filecmp.cmp(a / n, b / n, shallow=False)]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("options", [{}, {"packing": "bfd", "max_length": 2048},
                                     {"truncation": "truncate", "max_length": 256, "shard_size": 40_000}])
def test_one_pass_writes_the_bytes_of_processing_from_the_input(mixed, tmp_path, monkeypatch, boom, workers, options):
    s = settings(dedupe="exact", chunk_size=24 << 10, **options)
    one = run_pipeline(s, [str(mixed)], tmp_path / "one", workers=workers).manifest
    monkeypatch.setattr(Rendered, "open", classmethod(lambda cls, *a: None))  # every chunk from its input
    run_pipeline(s, [str(mixed)], tmp_path / "input", workers=workers)
    assert same_folders(tmp_path / "one", tmp_path / "input") == []
    rejected = one["counts"]["rejected"]
    assert rejected["duplicate"] > 500 and rejected["internal_error"] >= 2
    assert one["counts"]["unknown_keys"] and one["totals"]["rows"] > 10
    assert ("too_long" in rejected) == (options.get("truncation") != "truncate")


def test_records_are_parsed_once_and_dropped_copies_never_encoded(mixed, tmp_path, monkeypatch):
    calls = {"conversations": 0, "encode": 0}
    for name in calls:
        real = getattr(RecordProcessor, name)

        def spy(self, *a, _real=real, _name=name, **kw):
            calls[_name] += 1
            return _real(self, *a, **kw)

        monkeypatch.setattr(RecordProcessor, name, spy)
    m = run_pipeline(settings(dedupe="exact", chunk_size=24 << 10), [str(mixed)], tmp_path / "o", workers=1).manifest
    counts, rejected = m["counts"], m["counts"]["rejected"]
    assert calls["conversations"] == counts["records_read"]  # once per record, not once per pass
    assert calls["encode"] == m["totals"]["rows"] + rejected.get("too_long", 0) + rejected.get("internal_error", 0)
    assert rejected["duplicate"] > 500


def test_rendered_records_of_another_attempt_or_torn_are_not_trusted(mixed, tmp_path):
    s = settings(dedupe="exact", chunk_size=24 << 10)
    _, chunks, _ = _plan(s, [str(mixed)])
    staging = tmp_path / "o"
    (staging / "_chunks").mkdir(parents=True)
    index, run = RenderChunk(s, str(staging), attempt="a")(chunks[1])
    assert index == 1 and run
    assert Rendered.open(staging, chunks[1], "a") is not None
    assert Rendered.open(staging, chunks[1], "b") is None  # another run's first pass
    with open(staging / chunk_rendered(1), "ab") as f:
        f.write(b"x")
    assert Rendered.open(staging, chunks[1], "a") is None  # not the size its marker names
    (staging / chunk_rendered_marker(1)).unlink()
    assert Rendered.open(staging, chunks[1], "a") is None


def test_rendered_files_are_ours_and_cleaned_with_their_chunk():
    names = [chunk_rendered(3), chunk_rendered_marker(3), chunk_rendered(4)]
    assert all(is_ours(n) for n in names)
    assert sorted(leftovers_of(names, [3])) == sorted(names[:2])


def test_a_failed_first_pass_leaves_no_temporary_file(mixed, tmp_path, monkeypatch):
    s = settings(dedupe="exact", chunk_size=24 << 10)
    _, chunks, _ = _plan(s, [str(mixed)])
    (tmp_path / "_chunks").mkdir()
    monkeypatch.setattr(rendered_mod, "BATCH_BYTES", 4096)  # a batch is written before the failure

    def fail(self, *a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(rendered_mod._Writer, "close", fail)
    with pytest.raises(OSError, match="disk full"):
        RenderChunk(s, str(tmp_path), attempt="a")(chunks[0])
    assert list((tmp_path / "_chunks").iterdir()) == []


def test_formats_that_render_themselves_give_the_same_bytes(tmp_path, monkeypatch):
    """prompt/completion records bring their own pieces (``conv.pieces``): kept as they are."""
    rng = random.Random(4)
    words = ["alpha", "beta", "中文", "émoji 😀", "  spaced ", "line\nbreak"]
    records = [{"prompt": " ".join(rng.choice(words) for _ in range(rng.randrange(1, 9))),
                "completion": " ".join(rng.choice(words) for _ in range(rng.randrange(1, 9)))} for _ in range(60)]
    src = tmp_path / "pc.jsonl"
    src.write_bytes(b"".join(orjson.dumps(rng.choice(records)) + b"\n" for _ in range(900)))
    s = settings(dedupe="exact", chunk_size=8 << 10, input_format="prompt_completion")
    one = run_pipeline(s, [str(src)], tmp_path / "one", workers=2).manifest
    assert one["counts"]["rejected"]["duplicate"] > 700
    monkeypatch.setattr(Rendered, "open", classmethod(lambda cls, *a: None))
    run_pipeline(s, [str(src)], tmp_path / "input", workers=2)
    assert same_folders(tmp_path / "one", tmp_path / "input") == []


def test_lines_read_back_from_the_input_keep_the_readers_bytes(tmp_path, monkeypatch):
    """A local JSON Lines chunk's rendered records keep no original bytes: a quarantined record's
    line is read back from the input, without its CRLF and (on line 1) its byte-order mark, over
    chunk boundaries, and with blank lines between records."""
    rng = random.Random(6)
    records = [orjson.dumps({"id": f"b{i}", "messages": [{"role": "user", "content": f"q {i % 7} é"},
                                                          {"role": "assistant", "content": "a"}]}) for i in range(400)]
    long = orjson.dumps({"id": "long", "messages": [{"role": "user", "content": "word " * 5000},
                                                     {"role": "assistant", "content": "a"}]})
    body = b"\xef\xbb\xbf" + long + b"\r\n" + b"".join(r + (b"\r\n\r\n" if rng.random() < .1 else b"\r\n")
                                                        for r in records) + long + b"\n"
    src = tmp_path / "crlf.jsonl"
    src.write_bytes(body)
    s = settings(dedupe="exact", chunk_size=4 << 10, max_length=2048)
    one = run_pipeline(s, [str(src)], tmp_path / "one", workers=2).manifest
    assert one["counts"]["rejected"]["duplicate"] > 300 and one["counts"]["rejected"]["too_long"] == 1
    first = orjson.loads((tmp_path / "one" / "quarantine.jsonl").read_bytes().splitlines()[0])
    assert first["original"] == long.decode() and first["line"] == 1
    monkeypatch.setattr(Rendered, "open", classmethod(lambda cls, *a: None))
    run_pipeline(s, [str(src)], tmp_path / "input", workers=2)
    assert same_folders(tmp_path / "one", tmp_path / "input") == []
