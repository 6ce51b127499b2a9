"""Issue 28: no input ends the audit in a traceback. Generated columns (ids and labels of every
JSON type, lengths that disagree, packing columns that lie, masks of any value), each written as
JSON Lines and, where Arrow can hold it, Parquet: the CLI ends with 0, 1 or 2, never with an
exception, and a refusal (2) is one line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.audit.command import audit_cmd
from tests.foreign_data import our_rows

_BASE: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def base_rows(tmp_path_factory):
    _BASE[:] = our_rows(tmp_path_factory.mktemp("fuzz"))[1]


scalars = st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 128300), st.sampled_from([-100, 128000, 128009]),
                    st.booleans(), st.text(max_size=3), st.none(), st.floats(allow_nan=True), st.just([1, 2]))
values = st.one_of(st.lists(scalars, max_size=6), st.none(), st.integers(), st.text(max_size=3),
                   st.lists(st.integers(-1, 2), max_size=6))
columns = st.sampled_from(["input_ids", "labels", "loss_mask", "seq_lengths", "position_ids", "tokens", "id"])


@st.composite
def datasets(draw):
    """Our rows, with a few cells replaced, cut, extended or added."""
    rows = [dict(r) for r in _BASE[:draw(st.integers(0, len(_BASE)))]]
    for _ in range(draw(st.integers(0, 4))):
        if not rows:
            break
        row = draw(st.integers(0, len(rows) - 1))
        column, how = draw(columns), draw(st.sampled_from(["replace", "cut", "extend", "drop"]))
        cell = rows[row].get(column)
        if how == "replace" or not isinstance(cell, list):
            rows[row][column] = draw(values)
        elif how == "cut":
            rows[row][column] = cell[:draw(st.integers(0, len(cell)))]
        elif how == "extend":
            rows[row][column] = cell + draw(st.lists(scalars, min_size=1, max_size=3))
        else:
            rows[row].pop(column, None)
    return rows


def _run(path: Path) -> None:
    result = CliRunner().invoke(audit_cmd, [str(path)])
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.output, repr(result.exception))
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert len(result.output.strip().splitlines()) == 1, result.output


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(rows=datasets())
def test_generated_columns_never_end_in_a_traceback(rows):
    with tempfile.TemporaryDirectory(prefix="audit-fuzz-") as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        _run(path)
        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return  # Arrow cannot hold these values: only JSON Lines can carry them
        pq.write_table(table, Path(tmp) / "data.parquet")
        _run(Path(tmp) / "data.parquet")


ARROW_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32(), pa.uint64(), pa.float32(),
               pa.bool_(), pa.string()]


@st.composite
def typed_tables(draw):
    """Our rows with each list column cast to a drawn Arrow type (or a large list), where it fits."""
    rows = _BASE[:draw(st.integers(1, len(_BASE)))]
    cols = {}
    for name in draw(st.sampled_from([("input_ids", "labels"), ("input_ids", "loss_mask"), ("tokens", "labels"),
                                      ("input_ids", "labels", "position_ids")])):
        source = "labels" if name == "loss_mask" else "input_ids" if name in ("tokens", "position_ids") else name
        values = [r[source] for r in rows]
        if name == "loss_mask":
            values = [[int(x != -100) * draw(st.sampled_from([1, 1, 1, -1, 2])) for x in v] for v in values]
        if name == "position_ids":
            values = [list(range(len(v) - draw(st.integers(0, 1)))) for v in values]
        inner = draw(st.sampled_from(ARROW_TYPES))
        outer = pa.large_list(inner) if draw(st.booleans()) else pa.list_(inner)
        try:
            cols[name] = pa.array(values, pa.list_(pa.int64())).cast(outer, safe=False)
        except (pa.ArrowException, ValueError, TypeError):
            cols[name] = pa.array(values, pa.list_(pa.int64()))
    n = len(rows)
    ids = draw(st.sampled_from([None, pa.array([f"r{k}" for k in range(n)]), pa.array(range(n)),
                                pa.array([{"a": k} for k in range(n)]), pa.array([[k] for k in range(n)]),
                                pa.array([b"x"] * n), pa.array([0.5] * n), pa.array([None] * n, pa.string())]))
    if ids is not None:
        cols[draw(st.sampled_from(["id", "conversation_id", "uid"]))] = ids
    return pa.table(cols)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(table=typed_tables(), stream=st.booleans())
def test_typed_columns_never_end_in_a_traceback(table, stream):
    with tempfile.TemporaryDirectory(prefix="audit-fuzz-") as tmp:
        path = Path(tmp) / "data.arrow"
        with pa.OSFile(str(path), "wb") as sink:
            with (pa.ipc.new_stream if stream else pa.ipc.new_file)(sink, table.schema) as w:
                w.write_table(table, max_chunksize=2)
        _run(path)
        pq.write_table(table, Path(tmp) / "data.parquet")
        _run(Path(tmp) / "data.parquet")
