"""mosaicml-streaming's ``StreamingDataset`` reads our mds export back sample for sample.

This proves the MDS files, not LLM Foundry's loss: llm-foundry itself did not install here (see
docs/trainers.md), so the stitching of turns below is our reading of its collator, not its code.
"""

from __future__ import annotations

from sftdata.export.core import export_folder
from tests.interop.harness import conversations, expected_pairs, run_in_venv, venv_python


def test_streaming_reads_every_turn_of_every_conversation(packed_run, tmp_path):
    venv_python("streaming")
    out = tmp_path / "mds"
    export_folder(packed_run, "mds", out, unpack=True)
    got = run_in_venv("streaming", "streaming_samples.py", str(out), str(tmp_path / "r.json"))
    convs = conversations(packed_run)
    assert len(got["samples"]) == len(convs)
    pairs = set()
    for r, (turns, conv) in enumerate(zip(got["samples"], convs, strict=True)):
        ids = []
        for t in turns:
            ids += t["input_ids"]
            pairs |= {(r, len(ids) + k, tok) for k, tok in enumerate(t["labels"])}
            ids += t["labels"]
        assert ids == list(conv["input_ids"][:len(ids)])
    assert pairs == expected_pairs(packed_run, per_conversation=True)
