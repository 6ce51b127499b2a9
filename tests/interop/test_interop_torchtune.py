"""torchtune's own collators and recipe loss shift read our torchtune export with the same trained tokens."""

from __future__ import annotations

import json

import pytest

from sftdata.export.core import export_folder
from tests.interop.harness import (
    as_pairs,
    conversation_starts,
    expected_pairs,
    read_prepared,
    run_in_venv,
    venv_python,
)


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_torchtune_loss_pairs_equal_ours(plain_run, packed_run, tmp_path, packed):
    venv_python("torchtune")
    src = packed_run if packed else plain_run
    out = tmp_path / "tt"
    export_folder(src, "torchtune", out)
    got = run_in_venv("torchtune", "torchtune_pairs.py", str(out), "1" if packed else "0", str(tmp_path / "r.json"))
    want = expected_pairs(src, per_conversation=False)
    assert got["mismatched"] == 0  # the model input at each target position is the target token
    assert len(got["pairs"]) == len(want)  # no target counted twice
    assert as_pairs(got["pairs"]) == want
    if packed:
        max_len = json.loads((src / "manifest.json").read_text())["pipeline"]["max_length"]
        # the block-causal mask torchtune builds from seq_lens opens a block at every conversation,
        # and one more at the padding (its own final segment) when the row is shorter than max_seq_len
        for mask_starts, ours, row in zip(got["starts"], conversation_starts(src), read_prepared(src), strict=True):
            used = len(row["input_ids"])
            assert mask_starts == ours + ([used] if used < max_len else [])
