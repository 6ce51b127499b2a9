"""The streamed IPC writer (`sftdata.export.ipc_stream`) writes the file ``pyarrow`` writes, byte for byte."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata.export import ipc_stream, torchtune
from sftdata.export.commit import DatasetWriter
from sftdata.export.hf import PLAIN_SCHEMA, hf_table, streamed_plain_table
from sftdata.export.source import Rows

lists = st.lists(st.lists(st.integers(-100, 128_255), max_size=9), min_size=0, max_size=30)


def rows_of(batches: list[list[list[int]]]) -> Rows:
    """Rows as a shard of several record batches gives them: one part per batch."""
    parts = tuple(np.array([t for row in b for t in row], np.int32) for b in batches)
    lengths = [len(row) for b in batches for row in b]
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    labels = tuple(np.where(p % 3 == 0, -100, p).astype(np.int32) for p in parts)
    return Rows(id_parts=parts, label_parts=labels, offsets=offsets, segments=offsets, table=None)


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(lists, min_size=1, max_size=4), block=st.sampled_from([4, 12, 64, 1 << 22]))
def test_the_streamed_file_is_pyarrows_file(tmp_path_factory, batches, block):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ipc_stream, "BLOCK_BYTES", block)  # blocks smaller than a buffer, and larger
        check_same_file(tmp_path_factory, batches)


def check_same_file(tmp_path_factory, batches) -> None:
    rows = rows_of(batches)
    folder = tmp_path_factory.mktemp("ipc")
    plain = DatasetWriter(folder / "plain", PLAIN_SCHEMA)
    plain.write(hf_table(rows, False, segment_mask=True))
    streamed = DatasetWriter(folder / "streamed", PLAIN_SCHEMA)
    table, stand = streamed_plain_table(rows)
    streamed.write(table, stand)
    want = (folder / "plain" / "data-00000.arrow").read_bytes()
    assert (folder / "streamed" / "data-00000.arrow").read_bytes() == want
    assert plain.digest.hexdigest() == streamed.digest.hexdigest()
    back = pa.ipc.open_stream(want).read_all()
    assert back.column("input_ids").to_pylist() == [row for b in batches for row in b]
    tune = DatasetWriter(folder / "tune", torchtune.PLAIN_SCHEMA)
    tune.write(torchtune.plain_table(rows))
    tune_streamed = DatasetWriter(folder / "tune-streamed", torchtune.PLAIN_SCHEMA)
    tune_streamed.write(*torchtune.streamed_plain_table(rows))
    assert (folder / "tune-streamed" / "data-00000.arrow").read_bytes() == \
        (folder / "tune" / "data-00000.arrow").read_bytes()


def test_a_buffer_that_is_no_stand_in_passes_through(tmp_path):
    """Only buffers inside a stand-in's region are replaced; real ones (the offsets) are written as they are."""
    rows = rows_of([[[1, 2, 3], [4]], [[5, 6]]])
    table, stand = streamed_plain_table(rows)
    assert len(stand.regions) == 3 and all(size == 4 * 6 for _, size, _ in stand.regions)
    ipc_stream.write_stream(tmp_path / "x.arrow", PLAIN_SCHEMA, table, stand)
    back = pa.ipc.open_stream((tmp_path / "x.arrow").read_bytes()).read_all()
    assert back.column("attention_mask").to_pylist() == [[1, 1, 1], [1], [1, 1]]
    assert back.column("labels").to_pylist() == [[1, 2, -100], [4], [5, -100]]
