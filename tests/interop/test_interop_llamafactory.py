"""LLaMA-Factory's own argument parser, ``get_dataset(tokenized_path=...)`` and SFT collator read our
llama-factory export with the same trained tokens, and its 4-D mask keeps conversations apart."""

from __future__ import annotations

import json

from sftdata.export.core import export_folder
from tests.interop.harness import as_pairs, conversation_starts, expected_pairs, run_in_venv, venv_python


def _tokenizer_dir() -> str:
    from sftdata.tokenizer import _convert_builtin

    return str(_convert_builtin())


def test_llamafactory_packed_rows_train_our_tokens_with_block_diagonal_attention(packed_run, tmp_path):
    venv_python("llamafactory")
    out = tmp_path / "lf"
    export_folder(packed_run, "llama-factory", out)
    cutoff = json.loads((packed_run / "manifest.json").read_text())["pipeline"]["max_length"]
    got = run_in_venv("llamafactory", "llamafactory_pairs.py", str(out), _tokenizer_dir(), "1", str(cutoff),
                      str(tmp_path / "r.json"))
    assert got["block_diag_attn"] is True and got["remove_unused_columns"] is False
    train = got["train_dataset"]
    want = expected_pairs(packed_run, per_conversation=False)
    assert train["mismatched"] == 0
    assert len(train["pairs"]) == len(want)
    assert as_pairs(train["pairs"]) == want
    assert train["starts"] == conversation_starts(packed_run)  # padding attends nothing


def test_llamafactory_dataset_dict_train_and_validation(plain_run, packed_run, tmp_path):
    venv_python("llamafactory")
    out = tmp_path / "lf"
    export_folder(plain_run, "llama-factory", out, validation=packed_run, unpack=True)
    got = run_in_venv("llamafactory", "llamafactory_pairs.py", str(out), _tokenizer_dir(), "0", "256",
                      str(tmp_path / "r.json"))
    assert got["splits"] == ["eval_dataset", "train_dataset"]
    assert as_pairs(got["train_dataset"]["pairs"]) == expected_pairs(plain_run, per_conversation=False)
    assert as_pairs(got["eval_dataset"]["pairs"]) == expected_pairs(packed_run, per_conversation=True)
    assert got["train_dataset"]["mismatched"] == got["eval_dataset"]["mismatched"] == 0
    assert got["train_dataset"]["columns"] == ["attention_mask", "input_ids", "labels"]
