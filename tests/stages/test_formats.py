"""The same conversations in every input format and file kind give identical rows; packing keeps them all."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sftdata.constants import IGNORE_INDEX
from sftdata.runner import run_pipeline
from sftdata.stages.adapt.detect import detect_format
from sftdata.stages.pack import bfd_bins
from tests.conftest import run_committed, settings, write_jsonl


def alpaca_like(n: int) -> list[dict]:
    """Conversations every format can express: optional system, history pairs, a final answer."""
    out = []
    for i in range(n):
        rec = {"id": f"c{i:03d}", "instruction": f"Question {i}: what is {i} * 3?  ",
               "input": "Show the steps." if i % 2 else "", "output": f" {i} * 3 = {i * 3}. Done {'🎉' * (i % 3)}"}
        if i % 3 == 0:
            rec["system"] = "You are a careful calculator."
        if i % 4 == 1:
            rec["history"] = [["Hi there", "Hello! 你好"], ["Ready?", "Yes."]]
        out.append(rec)
    return out


def to_messages(rec: dict) -> dict:
    msgs = [{"role": "system", "content": rec["system"]}] if "system" in rec else []
    for u, a in rec.get("history", []):
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    prompt = rec["instruction"] + ("\n\n" + rec["input"] if rec["input"] else "")
    msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": rec["output"]}]
    return {"id": rec["id"], "messages": msgs}


def to_sharegpt(rec: dict) -> dict:
    m = to_messages(rec)
    conv = [{"from": {"user": "human", "assistant": "gpt"}[x["role"]], "value": x["content"]}
            for x in m["messages"] if x["role"] != "system"]
    out = {"id": rec["id"], "conversations": conv}
    if "system" in rec:
        out["system"] = rec["system"]
    return out


def rows(out: Path) -> list[tuple]:
    import datasets

    ds = datasets.load_from_disk(str(out))
    return list(zip(ds["id"], ds["input_ids"], ds["labels"], strict=True))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    recs = alpaca_like(40)
    src = write_jsonl(d / "m.jsonl", [to_messages(r) for r in recs])
    run_pipeline(settings(), [str(src)], d / "out")
    return recs, rows(d / "out")


def test_every_format_and_file_kind_gives_identical_rows(reference, tmp_path):
    recs, want = reference
    assert len(want) == 40
    messages = [to_messages(r) for r in recs]
    inputs = {
        "sharegpt": (write_jsonl(tmp_path / "s.jsonl", [to_sharegpt(r) for r in recs]), "sharegpt"),
        "alpaca": (write_jsonl(tmp_path / "a.jsonl", recs), "alpaca"),
        "auto-sharegpt": (write_jsonl(tmp_path / "s2.jsonl", [to_sharegpt(r) for r in recs]), "auto"),
        "auto-alpaca": (write_jsonl(tmp_path / "a2.jsonl", recs), "auto"),
    }
    gz = tmp_path / "m.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(m) + "\n" for m in messages).encode()))
    inputs["gzip"] = (gz, "messages")
    import zstandard

    zst = tmp_path / "m.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress("".join(json.dumps(m) + "\n" for m in messages).encode()))
    inputs["zstd"] = (zst, "messages")
    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(messages), parquet, row_group_size=16)
    inputs["parquet"] = (parquet, "messages")
    import datasets

    hf_dir = tmp_path / "hf"
    datasets.Dataset.from_list(messages).save_to_disk(str(hf_dir))
    inputs["datasets-folder"] = (hf_dir, "messages")
    for name, (path, fmt) in inputs.items():
        out = tmp_path / f"out-{name}"
        m = run_pipeline(settings(input_format=fmt), [str(path)], out).manifest
        assert m["counts"]["rejected"] == {}, (name, m["counts"])
        assert rows(out) == want, name


def test_custom_field_names_and_loss_weight(tmp_path):
    recs = [{"uid": "x1", "conversation": [{"speaker": "user", "text": "Hi"},
                                           {"speaker": "assistant", "text": "Draft", "loss_weight": 0},
                                           {"speaker": "user", "text": "Again"},
                                           {"speaker": "assistant", "text": "Final"}]}]
    src = write_jsonl(tmp_path / "c.jsonl", recs)
    fields = {"id": "uid", "messages": "conversation", "role": "speaker", "content": "text", "weight": "loss_weight"}
    out = tmp_path / "o"
    run_pipeline(settings(fields=fields), [str(src)], out)
    (rid, ids, labels), = rows(out)
    assert rid == "x1"
    trained = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    from sftdata.tokenizer import load_tokenizer

    tok = load_tokenizer()
    assert trained == tok.encode_text("Final") + [tok.eot_id]


def test_unmappable_records_are_quarantined(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [
        {"conversations": [{"from": "alien", "value": "x"}]},
        {"conversations": "nope"},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    ])
    m = run_pipeline(settings(input_format="sharegpt"), [str(src)], tmp_path / "o").manifest
    assert m["counts"]["records_written"] == 1
    assert m["counts"]["rejected"] == {"unknown_role": 1, "adapter_sharegpt": 1}


def test_decompression_limit_stops_a_bomb(tmp_path):
    big = gzip.compress(b"\n" * 5_000_000)
    (tmp_path / "bomb.jsonl.gz").write_bytes(big)
    m = run_committed(settings(max_decompressed_bytes=1_000_000), [str(tmp_path / "bomb.jsonl.gz")], tmp_path / "o")
    assert m["counts"]["rejected"] == {"decompressed_too_large": 1}


def test_detect_format():
    assert detect_format([{"messages": []}]) == "messages"
    assert detect_format([{"conversations": []}] * 3 + [{"messages": []}]) == "sharegpt"
    assert detect_format([{"instruction": "a", "output": "b"}]) == "alpaca"
    assert detect_format([1, "x"]) is None


def test_bfd_bins_properties():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(10, 900, size=500)]
    bins = bfd_bins(lengths, 1024)
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 1024 for b in bins)
    assert sum(lengths) / (len(bins) * 1024) > 0.9
    assert bfd_bins(lengths, 1024) == bins


@pytest.mark.slow
def test_packed_shared_corpus(shared_corpus, tmp_path):
    src = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "sft-mix.jsonl"
    out = tmp_path / "packed"
    m = run_pipeline(settings(packing="bfd", max_length=4096), [str(src)], out, workers=2).manifest
    assert m["packing"]["efficiency"] >= 0.95
    import datasets

    ds = datasets.load_from_disk(str(out))
    packed = [i for ids in ds["packed_ids"] for i in ids]
    assert sorted(packed) == sorted(r["id"] for r in shared_corpus)
    for row in ds:
        assert len(row["input_ids"]) <= 4096
        assert sum(row["seq_lengths"]) == len(row["input_ids"]) == len(row["position_ids"])
        start = 0
        for n in row["seq_lengths"]:
            assert row["position_ids"][start:start + n] == list(range(n))
            assert row["input_ids"][start] == 128000 and row["labels"][start] == IGNORE_INDEX
            start += n


@pytest.mark.parametrize("template", ["llama3.1", "llama3.2"])
def test_text_records_give_the_rows_of_the_messages_run(tmp_path, template, hf_reference):
    """Issue 9: `text` records rendered from a corpus give exactly the rows of the messages run."""
    from sftdata.stages.render import official_template_text, to_template_messages
    from sftdata.stages.validate import to_conversation
    from tests.conftest import SHARED_CORPUS
    from tests.synth import generate_records

    recs = generate_records(300, seed=61)
    if SHARED_CORPUS.is_file():
        recs += [json.loads(x) for x in SHARED_CORPUS.read_text(encoding="utf-8").splitlines() if x.strip()]
    for r in recs:  # a rendered text cannot carry weights; compare like with like
        for m in r["messages"]:
            m.pop("weight", None)
    texts = []
    for i, r in enumerate(recs):
        conv = to_conversation(r, source="t", line=i, template=template)
        text = hf_reference.apply_chat_template(to_template_messages(conv.messages), tools=conv.tools,
                                                chat_template=official_template_text(template), tokenize=False,
                                                date_string="26 Jul 2024")
        texts.append({"id": r["id"], "text": text})
    m_src = write_jsonl(tmp_path / "m.jsonl", recs)
    t_src = write_jsonl(tmp_path / "t.jsonl", texts)
    run_pipeline(settings(template=template), [str(m_src)], tmp_path / "m")
    mt = run_pipeline(settings(template=template, input_format="auto"), [str(t_src)], tmp_path / "t").manifest
    assert mt["inputs"][0]["format"] == "text"
    assert rows(tmp_path / "m") == rows(tmp_path / "t")
    assert len(rows(tmp_path / "t")) == len(recs)
