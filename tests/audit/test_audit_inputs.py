"""Issue 28: the audit of data without a manifest checks what the trainer will load (declared
features, rows at all, 0/1 masks), and refuses every malformed input with one line (exit 2).

Data is our own rendering of generated records (``tests/foreign_data.py``), broken one way per case.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sftdata.audit.command import audit_cmd
from sftdata.constants import IGNORE_INDEX
from tests.audit.test_audit_formats import write_mds, write_olmo
from tests.foreign_data import audit, failed, hits, write

# ------------------------------------------------------------------------------- what is loaded


def _dataset(folder: Path, rows: list[dict]) -> Path:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    return folder


def test_empty_inputs_fail_has_rows(ours, tmp_path):
    _, rows = ours
    empty = pa.table({"input_ids": pa.array([], pa.list_(pa.int64())), "labels": pa.array([], pa.list_(pa.int64()))})
    pq.write_table(empty, tmp_path / "empty.parquet")
    code, report, _ = audit(tmp_path / "empty.parquet")
    assert code == 1 and failed(report) == {"has_rows"}
    folder = _dataset(tmp_path / "ds", rows)
    state = json.loads((folder / "state.json").read_text())
    state["_data_files"] = []
    (folder / "state.json").write_text(json.dumps(state))
    code, report, _ = audit(folder)
    assert code == 1 and "has_rows" in failed(report) and "lists no data files" in hits(report, "has_rows")[0]["message"]
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": []}))
    code, report, _ = audit(tmp_path / "dd")
    assert code == 1 and failed(report) == {"has_rows"} and "no splits" in hits(report, "has_rows")[0]["message"]
    code, report, _ = audit(write(tmp_path / "full.parquet", rows))
    assert code == 0 and next(r for r in report["rules"] if r["name"] == "has_rows")["status"] == "pass"


@pytest.mark.parametrize("damage", ["labels_float32", "ids_string", "garbage", "missing"])
def test_dataset_info_that_load_from_disk_refuses_fails(ours, tmp_path, damage):
    _, rows = ours
    folder = _dataset(tmp_path / "ds", rows)
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text())
    if damage == "missing":
        info_path.unlink()
    elif damage == "garbage":
        info_path.write_text("{not json")
    else:
        column, dtype = ("labels", "float32") if damage == "labels_float32" else ("input_ids", "string")
        info["features"][column]["feature"]["dtype"] = dtype
        info_path.write_text(json.dumps(info))
    code, report, _ = audit(folder)
    assert code == 1 and failed(report) == {"declared_features"}, report["violations"][:3]
    if damage.endswith(("float32", "string")):
        assert dtype in hits(report, "declared_features")[0]["message"]


def test_parquet_huggingface_metadata_is_checked(ours, tmp_path):
    _, rows = ours
    table = pa.Table.from_pylist(rows)
    features = {"id": {"dtype": "string", "_type": "Value"},
                "input_ids": {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "Sequence"},
                "labels": {"feature": {"dtype": "float32", "_type": "Value"}, "_type": "Sequence"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "hf.parquet")
    code, report, _ = audit(tmp_path / "hf.parquet")
    assert code == 1 and failed(report) == {"declared_features"}
    features["labels"]["feature"]["dtype"] = "int64"
    pq.write_table(table.replace_schema_metadata({b"huggingface": json.dumps({"info": {"features": features}})}),
                   tmp_path / "ok.parquet")
    assert audit(tmp_path / "ok.parquet")[0] == 0


@pytest.mark.parametrize("value", [-1, 7, 0.5])
def test_mask_values_other_than_0_and_1_fail(ours, tmp_path, value):
    _, rows = ours
    masked = [{"input_ids": r["input_ids"], "loss_mask": [float(x != IGNORE_INDEX) for x in r["labels"]]}
              for r in rows]
    at = masked[3]["loss_mask"].index(1.0)
    masked[3]["loss_mask"][at] = value
    code, report, _ = audit(write(tmp_path / "m.parquet", masked))
    [hit] = hits(report, "mask_values")
    assert code == 1 and "mask_values" in failed(report) and (hit["row"], hit["position"]) == (3, at)
    assert repr(value) in hit["message"] or repr(float(value)) in hit["message"]


# ------------------------------------------------------------------------------ malformed: exit 2


def _refused(path: Path | str, *args: str) -> str:
    result = CliRunner().invoke(audit_cmd, [str(path), *args])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    text = result.output.strip()
    assert "\n" not in text and "Traceback" not in text, text
    return text


def _rows_with(rows: list[dict], row: int, **changes) -> list[dict]:
    out = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    out[row] = dict(out[row], **changes)
    return out


def _malformed_tables(rows: list[dict]) -> dict[str, tuple[pa.Table, str]]:
    ids = [r["input_ids"] for r in rows]
    labels = [r["labels"] for r in rows]
    int_lists = pa.list_(pa.int64())
    base = {"input_ids": pa.array(ids, int_lists), "labels": pa.array(labels, int_lists)}

    def table(**cols):
        return pa.table({**base, **cols})

    null_labels = labels[:2] + [None] + labels[3:]
    packed = [[len(x) - 3] for x in ids]
    return {
        "labels_longer": (pa.Table.from_pylist(_rows_with(rows, 2, labels=labels[2] + [IGNORE_INDEX])), "row 2"),
        "labels_shorter": (pa.Table.from_pylist(_rows_with(rows, 4, labels=labels[4][:-1])), "row 4"),
        "null_labels": (table(labels=pa.array(null_labels, int_lists)), "row 2"),
        "string_ids": (table(input_ids=pa.array([[str(x) for x in r] for r in ids])), "input_ids"),
        "bool_ids": (table(input_ids=pa.array([[bool(x % 2) for x in r] for r in ids])), "input_ids"),
        "nested_ids": (table(input_ids=pa.array([[[x] for x in r] for r in ids])), "input_ids"),
        "string_labels": (table(labels=pa.array([[str(x) for x in r] for r in labels])), "labels"),
        "nested_labels": (table(labels=pa.array([[[x] for x in r] for r in labels])), "labels"),
        "all_rows_empty": (table(input_ids=pa.array([[] for _ in ids], int_lists),
                                 labels=pa.array([[] for _ in ids], int_lists)), "empty"),
        "seq_lengths_short": (table(seq_lengths=pa.array(packed, int_lists)), "row 0"),
        "position_ids_short": (table(position_ids=pa.array([list(range(len(x) - 1)) for x in ids], int_lists)),
                               "row 0"),
    }


def test_malformed_tables_are_refused_with_one_line(ours, tmp_path):
    _, rows = ours
    for name, (table, where) in _malformed_tables(rows).items():
        pq.write_table(table, tmp_path / f"{name}.parquet")
        line = _refused(tmp_path / f"{name}.parquet")
        assert f"{name}.parquet" in line and where in line, (name, line)


def test_malformed_json_lines_are_refused_naming_the_row(ours, tmp_path):
    _, rows = ours
    plain = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    cases = {"string_id": _rows_with(rows, 1, input_ids=["x", *plain[1]["input_ids"][1:]]),
             "huge_id": _rows_with(rows, 3, input_ids=[10**30, *plain[3]["input_ids"][1:]]),
             "bool_label": _rows_with(rows, 2, labels=[True, *plain[2]["labels"][1:]]),
             "null_labels": _rows_with(rows, 5, labels=None)}
    for name, data in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
        row = next(k for k, (a, b) in enumerate(zip(data, plain, strict=True)) if a != b)
        line = _refused(path)
        assert f"row {row}" in line and name + ".jsonl" in line, line
    (tmp_path / "broken.jsonl").write_text(json.dumps(plain[0]) + "\n{\"input_ids\": [1, 2\n")
    assert "row 1 (line 2): not JSON" in _refused(tmp_path / "broken.jsonl")
    (tmp_path / "deep.jsonl").write_text(json.dumps(plain[0]) + "\n" + "[" * 200_000 + "]" * 200_000 + "\n")
    assert "nested too deeply" in _refused(tmp_path / "deep.jsonl")


def _mds_turns(folder: Path, turns_of_sample: list) -> Path:
    """An MDS folder whose samples are the given JSON bytes (``turns`` as LLM Foundry writes them)."""
    samples = [np.uint32(len(b)).tobytes() + b for b in turns_of_sample]
    config = json.dumps({"version": 2}).encode()
    start = 4 + 4 * (len(samples) + 1) + len(config)
    offs = np.cumsum([start] + [len(x) for x in samples]).astype(np.uint32)
    folder.mkdir(parents=True)
    (folder / "shard.00000.mds").write_bytes(np.uint32(len(samples)).tobytes() + offs.tobytes() + config
                                             + b"".join(samples))
    (folder / "index.json").write_text(json.dumps({"version": 2, "shards": [{
        "format": "mds", "compression": None, "column_names": ["turns"], "column_encodings": ["json"],
        "raw_data": {"basename": "shard.00000.mds"}, "samples": len(samples)}]}))
    return folder


def test_malformed_mds_and_olmo_are_refused(ours, tmp_path):
    _, rows = ours
    good = json.dumps([{"input_ids": rows[0]["input_ids"][:5], "labels": rows[0]["input_ids"][5:]}]).encode()
    cases = {"string_ids": b'[{"input_ids": ["a"], "labels": [1]}]',
             "huge_id": b'[{"input_ids": [1000000000000000000000000000000], "labels": [1]}]',
             "deep": b"[" * 200_000 + b"]" * 200_000}
    for name, sample in cases.items():
        line = _refused(_mds_turns(tmp_path / name, [good, sample]))
        assert "sample 1" in line and "shard.00000.mds" in line, line
    write_mds(tmp_path / "ok-mds", rows)
    assert audit(tmp_path / "ok-mds")[0] == 0
    for name, junk in (("letters", "0,12\nabc,def\n"), ("backwards", "10,20\n0,5\n"), ("beyond", "0,99999999\n")):
        write_olmo(tmp_path / name, rows, bounds=False)
        with gzip.open(tmp_path / name / "token_ids_part_0000.csv.gz", "wt") as f:
            f.write(junk)
        line = _refused(tmp_path / name)
        assert "token_ids_part_0000.csv.gz: line" in line, line
    write_olmo(tmp_path / "notgz", rows, bounds=False)
    (tmp_path / "notgz" / "token_ids_part_0000.csv.gz").write_bytes(b"plain text")
    assert "not a gzip" in _refused(tmp_path / "notgz")


def test_unreadable_files_are_refused(tmp_path):
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 this is not a parquet file")
    assert "cut.parquet" in _refused(tmp_path / "cut.parquet")
    (tmp_path / "cut.arrow").write_bytes(b"ARROW1\x00\x00 nothing else")
    assert "cut.arrow" in _refused(tmp_path / "cut.arrow")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00binary")
    assert "bin.jsonl" in _refused(tmp_path / "bin.jsonl")


def test_an_oversized_row_is_refused_with_its_size(tmp_path):
    """One Parquet row of 5 M ids (a few KB on disk) is refused unread, naming its size."""
    from sftdata.audit.slices import MAX_ROW_TOKENS

    n = MAX_ROW_TOKENS + 1
    big = pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), pa.array(np.full(n, 271, np.int64)))
    pq.write_table(pa.table({"input_ids": big, "labels": big}), tmp_path / "big.parquet")
    assert (tmp_path / "big.parquet").stat().st_size < 100_000
    line = _refused(tmp_path / "big.parquet")
    assert f"row 0: {n:,} tokens in one row" in line


# -------------------------------------------------------------------------------- bounded slices


def _stream(path: Path, rows: list[dict]) -> Path:
    """An Arrow IPC *stream* (what ``datasets`` writes), two rows per record batch."""
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        for batch in table.to_batches(max_chunksize=2):
            w.write_batch(batch)
    return path


@pytest.mark.parametrize("fmt", ["arrow-file", "arrow-stream", "parquet", "jsonl", "mds", "olmo"])
def test_slices_of_a_few_rows_give_the_same_report(ours, tmp_path, monkeypatch, fmt):
    """Read one or two rows at a time (the Arrow map reopened after every slice), a part gives
    the very report it gives read whole: violations name the same rows and positions."""
    from sftdata.audit import slices

    _, rows = ours
    bad = [dict(r, labels=list(r["labels"])) for r in rows]
    last = max(i for i, x in enumerate(bad[4]["labels"]) if x != IGNORE_INDEX)
    bad[4]["labels"][last] = IGNORE_INDEX  # row 4's last <|eot_id|> untrained
    path = tmp_path / "data"
    if fmt == "arrow-stream":
        path = _stream(tmp_path / "s.arrow", bad)
    elif fmt in ("mds", "olmo"):
        (write_mds(path, bad) if fmt == "mds" else write_olmo(path, bad, bounds=True))
    else:
        path = write(tmp_path / f"d.{ {'arrow-file': 'arrow'}.get(fmt, fmt)}", bad)
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(bad), path, row_group_size=3)
    whole = audit(path)
    seen: list[int] = []
    real_cuts = slices.cuts

    def small_cuts(lens, where, first_row):
        out = real_cuts(lens, where, first_row)
        seen.extend(b - a for a, b in out)
        return out

    monkeypatch.setattr(slices, "SLICE_TOKENS", 100)
    monkeypatch.setattr(slices, "MAP_WINDOW", 1)
    monkeypatch.setattr(slices, "cuts", small_cuts)
    sliced = audit(path)
    assert whole[0] == sliced[0] == 1 and whole[1]["violations"] == sliced[1]["violations"]
    assert {v["row"] for v in sliced[1]["violations"]} == {4} and whole[1]["stats"] == sliced[1]["stats"]
    if fmt not in ("jsonl", "mds"):  # these two cut per row as they read
        assert seen and max(seen) <= 2


def test_shard_names_come_from_the_storage_layout(ours, tmp_path):
    """A folder of sftdata shards without its manifest is an unfinished run, for every shard name
    `storage/layout.py` gives (chunk indexes past 999,999 have seven digits)."""
    from sftdata.storage.layout import shard_name

    _, rows = ours
    write(tmp_path / "run" / shard_name(1_000_000, 0), rows)
    assert "not a finished `sftdata run` output" in _refused(tmp_path / "run")


def test_unsigned_ids_with_a_mask_are_read_as_ids(ours, tmp_path):
    """uint32 ids (OLMo-style) beside a loss mask: the untrained positions stay -100, not 2**32 - 100."""
    _, rows = ours
    table = pa.table({"input_ids": pa.array([r["input_ids"] for r in rows], pa.list_(pa.uint32())),
                      "loss_mask": pa.array([[x != IGNORE_INDEX for x in r["labels"]] for r in rows])})
    pq.write_table(table, tmp_path / "u.parquet")
    code, report, output = audit(tmp_path / "u.parquet")
    assert code == 0, output


@pytest.mark.parametrize("junk", ["[" * 100_000 + "]" * 100_000, '{"features": ' + '{"_type": "Sequence", "feature": ' * 900
                                  + '{"_type": "Value", "dtype": "int64"}' + "}" * 901, "[]", "null"])
def test_junk_metadata_beside_datasets_never_crashes(ours, tmp_path, junk):
    """dataset_info.json and export_manifest.json of any content: a finding or a refusal, never a crash."""
    _, rows = ours
    folder = _dataset(tmp_path / "ds", rows)
    (folder / "dataset_info.json").write_text(junk)
    (folder / "export_manifest.json").write_text(junk)
    code, report, _ = audit(folder)
    assert code == 1 and failed(report) == {"declared_features"}


@pytest.mark.parametrize("kind", ["struct", "list", "binary", "float", "null"])
def test_an_id_column_of_another_type_is_not_used_as_the_row_id(ours, tmp_path, kind):
    _, rows = ours
    n = len(rows)
    ids = {"struct": pa.array([{"a": k} for k in range(n)]), "list": pa.array([[k] for k in range(n)]),
           "binary": pa.array([b"x"] * n), "float": pa.array([0.5] * n), "null": pa.array([None] * n)}[kind]
    table = pa.table({"id": ids, "input_ids": pa.array([r["input_ids"] for r in rows]),
                      "labels": pa.array([r["labels"] for r in rows])})
    pq.write_table(table, tmp_path / "i.parquet")
    code, report, output = audit(tmp_path / "i.parquet")
    assert code == 0, output


def test_bounds_and_lines_that_would_grow_without_end_are_refused(ours, tmp_path, monkeypatch):
    """A bounds file repeating one document (a gzip bomb of "0,1" lines) and a JSON Lines line
    longer than any row are refused, not accumulated."""
    from sftdata.audit import slices

    _, rows = ours
    write_olmo(tmp_path / "olmo", rows, bounds=False)
    with gzip.open(tmp_path / "olmo" / "token_ids_part_0000.csv.gz", "wt") as f:
        f.write("0,1\n" * 1000)
    assert "line 2: document 0,1" in _refused(tmp_path / "olmo")
    monkeypatch.setattr(slices, "MAX_LINE_CHARS", 1000)
    path = write(tmp_path / "long.jsonl", [{"input_ids": r["input_ids"] * 20, "labels": r["labels"] * 20} for r in rows])
    assert "row 0 (line 1): longer than 1,000 characters" in _refused(path)


def test_dataset_info_without_features_loads_and_an_image_label_does_not(ours, tmp_path):
    """What datasets.load_from_disk does: features null or absent are taken from the Arrow schema
    (pass); a feature it cannot cast to, on a column the audit reads, is refused (fail)."""
    _, rows = ours
    folder = _dataset(tmp_path / "ds", rows)
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text())
    for features, code in ((None, 0), ({**info["features"], "labels": {"_type": "Image"}}, 1)):
        info_path.write_text(json.dumps(dict(info, features=features)))
        got, report, _ = audit(folder)
        assert got == code and failed(report) <= {"declared_features"}, report["violations"][:2]
