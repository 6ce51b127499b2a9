"""Axolotl's own config loader, ``load_datasets`` and collator read our axolotl export as
pre-tokenized rows and train the same tokens (rows may come back shuffled, so they are matched by
their tokens)."""

from __future__ import annotations

from collections import Counter

from sftdata.export.core import export_folder
from tests.interop.harness import conversations, run_in_venv, venv_python


def _tokenizer_dir() -> str:
    from sftdata.tokenizer import _convert_builtin

    return str(_convert_builtin())


def _ours(src) -> Counter:
    rows = Counter()
    for conv in conversations(src):
        ids, labels = conv["input_ids"], conv["labels"]
        pairs = tuple(sorted((int(p), int(labels[p])) for p in range(1, len(ids)) if labels[p] != -100))
        rows[(tuple(int(t) for t in ids), pairs)] += 1
    return rows


def test_axolotl_loads_the_export_as_tokenized_rows_and_trains_our_tokens(plain_run, tmp_path):
    venv_python("axolotl")
    out = tmp_path / "ax"
    export_folder(plain_run, "axolotl", out)
    work = tmp_path / "work"
    work.mkdir()
    got = run_in_venv("axolotl", "axolotl_pairs.py", str(out), _tokenizer_dir(), "256", str(work),
                      str(tmp_path / "r.json"))
    theirs = Counter((tuple(r["input_ids"]), tuple(sorted(map(tuple, r["pairs"])))) for r in got["rows"])
    assert theirs == _ours(plain_run)
