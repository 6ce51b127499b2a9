"""Every `sftdata export` target reads back through `sftdata audit`: an export passes, and an export
that moves or drops a trained token fails, naming the row."""

from __future__ import annotations

import pytest

from sftdata.audit.run import run_audit
from sftdata.export.core import export_folder
from sftdata.export.targets import Target
from tests.interop.harness import corpus_records

# Truncation drops here: a row cut at max_length is flagged by the manifest-less audit of an export
# (`turn_cut_off`), which is right for a reader that cannot see the manifest's list of truncated ids.


def prepared(tmp, name: str, *extra: str):
    from click.testing import CliRunner

    from sftdata.cli import main
    from tests.synth import write_jsonl

    data = tmp / f"{name}.jsonl"
    write_jsonl(data, corpus_records(40, 17))
    out = tmp / name
    res = CliRunner().invoke(main, ["run", "--input", str(data), "--output", str(out), "--workers", "1",
                                    "--truncation", "drop", "--max-length", "2048", "--no-audit", *extra],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return prepared(tmp_path_factory.mktemp("exp-audit"), "plain")


@pytest.fixture(scope="module")
def packed_run(tmp_path_factory):
    return prepared(tmp_path_factory.mktemp("exp-audit"), "packed", "--packing", "bfd")


@pytest.mark.parametrize("target", [t.value for t in Target])
def test_every_export_target_passes_the_audit(plain_run, tmp_path, target):
    out = tmp_path / target
    export_folder(plain_run, target, out)
    report = run_audit(out)
    assert report.ok, report.summary_text()
    assert report.stats["rows"] > 0


@pytest.mark.parametrize("target", ["llama-factory", "torchtune", "megatron-bridge", "parquet"])
def test_packed_exports_pass_the_audit(packed_run, tmp_path, target):
    out = tmp_path / target
    export_folder(packed_run, target, out)
    report = run_audit(out)
    assert report.ok, report.summary_text()


def _tamper_datasets_folder(folder, column, mutate):
    import datasets

    ds = datasets.load_from_disk(str(folder))
    rows = ds.to_list()
    row_index = mutate(rows)
    tampered = datasets.Dataset.from_list(rows, features=ds.features)
    target = folder.parent / (folder.name + "-tampered")
    tampered.save_to_disk(str(target))
    return target, row_index


@pytest.mark.parametrize("target,labels", [("hf", "labels"), ("torchtune", "labels")])
def test_an_export_that_untrains_a_closing_token_fails_naming_the_row(plain_run, tmp_path, target, labels):
    out = tmp_path / target
    export_folder(plain_run, target, out)
    ids_col = "tokens" if target == "torchtune" else "input_ids"

    def untrain_last_trained(rows):
        for i, row in enumerate(rows):
            trained = [p for p, t in enumerate(row[labels]) if t != -100]
            if len(trained) > 2:
                row[labels][trained[-1]] = -100  # the closing <|eot_id|> of the last trained turn
                return i
        raise AssertionError("no row with trained tokens")

    tampered, row = _tamper_datasets_folder(out, labels, untrain_last_trained)
    report = run_audit(tampered)
    assert not report.ok
    hit = [v for v in report.to_json()["violations"] if v["row"] == row]
    assert hit and {v["rule"] for v in hit} & {"eot_trained", "turn_trained_whole"}, report.summary_text()
    assert {v["row"] for v in report.to_json()["violations"]} == {row}  # only the tampered row
    assert ids_col
