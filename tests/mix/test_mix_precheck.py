"""Budgets the input cannot hold are refused before the first pass tokenizes anything (issue 30)."""

from __future__ import annotations

import pytest

from sftdata.mix.precheck import records_bound, rows_bound
from sftdata.mix.recipe import Take
from sftdata.stages.read.sources import plan_chunks
from tests.conftest import sftdata_cli, write_jsonl
from tests.mix.recipe_data import build


def _first_pass_ran(folder) -> bool:
    return any(folder.rglob("*.rows.arrow")) or any(folder.rglob("plan.json"))


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_the_bound_counts_every_line_across_chunks(tmp_path, trailing_newline):
    path = tmp_path / "in.jsonl"
    body = "\n".join(f'{{"id": "r{i}", "messages": []}}' for i in range(997)) + ("\n" if trailing_newline else "")
    path.write_text(body)
    for size in (64, 1000, 1 << 20):
        assert records_bound(plan_chunks([path], size)) == 997


def test_rows_bound_follows_the_take():
    assert rows_bound(Take("all"), 10) == 10
    assert rows_bound(Take("records", 4), None) == 4
    assert rows_bound(Take("fraction", 0.25), 10) == 3  # floor(2.5 + 0.5)
    assert rows_bound(Take("repeat", 2.5), 10) == 25
    assert rows_bound(Take("tokens", 100), 10) is None and rows_bound(Take("all"), None) is None


def test_a_records_take_above_the_lines_is_refused_before_tokenizing(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "messages": [
        {"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": f"a {i}"}]} for i in range(20)])
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"seed: 1\nsources:\n  - name: a\n    input: {src}\n    take: {{records: 21}}\n")
    out = tmp_path / "out"
    r = sftdata_cli("run", recipe, "--output", out, "--no-audit")
    assert r.returncode == 2 and "holds at most 20 record(s)" in r.stderr and "before tokenizing" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not _first_pass_ran(tmp_path)
    recipe.write_text(recipe.read_text().replace("records: 21", "records: 20"))
    r = sftdata_cli("run", recipe, "--output", out, "--no-audit")
    assert r.returncode == 0, r.stderr


def test_an_eval_size_above_what_the_sources_can_give_is_refused_before_tokenizing(tmp_path):
    recipe = build(tmp_path)  # alpaca: 120 Parquet rows repeated 2.5x -> at most 300 rows
    text = recipe.read_text().replace("eval: {fraction: 0.05}", "eval: {records: 301}")
    recipe.write_text(text)
    r = sftdata_cli("run", recipe, "--output", tmp_path / "out", "--no-audit")
    assert r.returncode == 2 and "alpaca can give at most 300 row(s)" in r.stderr, r.stderr
    assert not _first_pass_ran(tmp_path)
    # Over the whole mix a source with a token budget has no bound: checked after the first pass.
    recipe.write_text(text.replace("per_source: true", "per_source: false"))
    r = sftdata_cli("run", recipe, "--output", tmp_path / "out2", "--no-audit")
    assert r.returncode == 0, r.stderr
