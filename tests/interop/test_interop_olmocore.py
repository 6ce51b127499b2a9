"""OLMo-core's ``NumpyPaddedFSLDataset`` and ``get_labels`` read our olmo-core export with the same
trained tokens, one instance per conversation."""

from __future__ import annotations

from sftdata.export.core import export_folder
from tests.interop.harness import as_pairs, conversations, expected_pairs, run_in_venv, venv_python


def test_olmocore_padded_instances_train_our_tokens(plain_run, packed_run, tmp_path):
    venv_python("olmocore")
    for name, src in (("plain", plain_run), ("packed", packed_run)):
        out = tmp_path / name
        export_folder(src, "olmo-core", out, unpack=True)
        got = run_in_venv("olmocore", "olmocore_pairs.py", str(out), "1024", str(tmp_path / f"work-{name}"),
                          str(tmp_path / f"{name}.json"))
        assert got["instances"] == len(conversations(src))
        assert got["mismatched"] == 0
        assert as_pairs(got["pairs"]) == expected_pairs(src, per_conversation=True)
