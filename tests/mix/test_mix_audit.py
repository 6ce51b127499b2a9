"""The audit of a split run shows its mixture: per source, rows, tokens and trained tokens of each
split, from the manifests' ``mix`` key, in the terminal summary, the JSON and an HTML chart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import sftdata_cli
from tests.mix.recipe_data import build

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "audit-report.schema.json").read_text())


@pytest.fixture(scope="module")
def split_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mixaudit")
    out = d / "out"
    r = sftdata_cli("run", build(d, budget=6_000, eval_fraction=0.2), "--output", out, "--workers", "1", "--no-audit")
    assert r.returncode == 0, r.stderr
    return out


def _mix(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["mix"]


def test_json_of_a_split_run_carries_each_splits_per_source_figures(split_run, tmp_path):
    r = sftdata_cli("audit", split_run, "--json", tmp_path / "a.json")
    assert r.returncode == 0, r.stdout + r.stderr
    reports = json.loads((tmp_path / "a.json").read_text())["splits"]
    assert sorted(reports) == ["eval", "train"]
    for split, report in reports.items():
        jsonschema.validate(report, SCHEMA)
        mix = _mix(split_run / split)
        assert report["mixture"]["split"] == split
        assert report["mixture"]["sources"] == mix["sources"]
        assert sorted(report["mixture"]["sources"]) == ["alpaca", "chat", "share"]
        # the figures of this split add up to what the audit counted in its rows
        figures = [s["splits"][split] for s in report["mixture"]["sources"].values()]
        assert sum(f["rows"] for f in figures) == report["stats"]["rows"]
        assert sum(f["tokens"] for f in figures) == report["stats"]["tokens"]
        assert sum(f["trained_tokens"] for f in figures) == report["stats"]["trained_tokens"]
    # the terminal summary: the table once (it covers both splits), after the last split's rules,
    # one line per source and split with its rows and tokens
    assert r.stdout.count("mixture by source") == 1
    assert r.stdout.index("split eval:") < r.stdout.index("mixture by source")
    for name, entry in _mix(split_run / "train")["sources"].items():
        for split, f in entry["splits"].items():
            assert re.search(rf"│ {name} +│ {split} +│ +{f['rows']:,} │ +{f['tokens']:,} │", r.stdout), (name, split)


def test_html_of_a_split_has_a_mixture_chart_with_one_bar_per_source(split_run, tmp_path):
    page = tmp_path / "a.html"
    r = sftdata_cli("audit", split_run / "eval", "--html", page)
    assert r.returncode == 0, r.stdout + r.stderr
    html = page.read_text()
    sources = _mix(split_run / "eval")["sources"]
    for figure in ("rows", "tokens"):
        chart = re.search(rf'<svg id="mixture-{figure}".*?</svg>', html, re.S)
        assert chart, f"no {figure} mixture chart"
        bars = re.findall(r'<g class="mix-bar" data-source="([^"]+)">(.*?)</g>', chart.group(0), re.S)
        assert sorted(n for n, _ in bars) == sorted(sources)  # one bar per source
        for name, bar in bars:
            for split, f in sources[name]["splits"].items():
                assert f"<title>{name} {split}: {f[figure]:,}</title>" in bar
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no external assets


def test_a_folder_outside_a_mix_has_no_mixture(tmp_path):
    from tests.synth import generate_records, write_jsonl

    write_jsonl(tmp_path / "d.jsonl", generate_records(20, seed=3, tools=False))
    assert sftdata_cli("run", "--input", tmp_path / "d.jsonl", "--output", tmp_path / "o", "--no-audit").returncode == 0
    r = sftdata_cli("audit", tmp_path / "o", "--json", tmp_path / "a.json", "--html", tmp_path / "a.html")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mixture" not in json.loads((tmp_path / "a.json").read_text())
    assert "mixture" not in r.stdout and "mix-bar" not in (tmp_path / "a.html").read_text()


def test_run_of_a_recipe_says_the_mixture_once(tmp_path):
    """``sftdata run RECIPE`` audits each split and then prints its own per-source block: the
    audit summaries leave the mixture table out rather than repeat it."""
    r = sftdata_cli("run", build(tmp_path, budget=3_000, eval_fraction=0.2), "--output", tmp_path / "out",
                    "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("OK: every rule holds") == 2
    assert "mixture by source" not in r.stdout and "mix (seed 7)" in r.stdout
