"""The shape of the package: no import cycle, choices spelled once, each module importable alone."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from sftdata.choices import Dedupe, Encoder, InputFormat, Packing, TemplateName, TrainOn, Truncation, values

PKG = Path(__file__).resolve().parents[2] / "sftdata"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: set[str] = set()


def top_level_imports(path: Path) -> set[str]:
    """sftdata modules imported at module level (not inside functions or TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("sftdata"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if base.startswith("sftdata"):
                    # `from pkg import submodule` needs the submodule, not the package's own names
                    subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
                    found.update(subs)
                    if len(subs) < len(node.names):
                        found.add(base)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    return found


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    MODULES.update(mods)
    return {m: {d for d in top_level_imports(p) if d in mods and d != m} for m, p in mods.items()}


def test_no_import_cycle():
    g = graph()
    assert len(g) > 40
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                dfs(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            dfs(m)


def test_the_low_layers_do_not_import_the_high_ones():
    g = graph()
    for low in [m for m in g if m.startswith(("sftdata.storage", "sftdata.errors", "sftdata.choices"))]:
        high = {d for d in g[low] if d.startswith(("sftdata.stages.write", "sftdata.runner", "sftdata.process",
                                                   "sftdata.executors", "sftdata.cli", "sftdata.audit"))}
        assert not high, (low, high)


def test_every_module_imports_alone():
    mods = sorted(m for m in graph() if not m.endswith("__main__"))
    code = ("import importlib, subprocess, sys\n"
            "bad = []\n"
            f"for m in {mods!r}:\n"
            "    r = subprocess.run([sys.executable, '-c', f'import {m}'], capture_output=True, text=True)\n"
            "    if r.returncode: bad.append((m, r.stderr.strip().splitlines()[-1:]))\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_schema_choices_are_the_enums():
    schema = json.loads((PKG / "schemas" / "pipeline.schema.json").read_text())
    stages = schema["properties"]["stages"]["properties"]

    def enum(stage, key):
        return stages[stage]["properties"][key]["enum"]

    assert enum("read", "format") == values(InputFormat)
    assert enum("validate", "dedupe") == values(Dedupe)
    assert enum("render", "template") == values(TemplateName)
    assert enum("render", "encoder") == values(Encoder)
    assert enum("label", "train_on") == values(TrainOn)
    assert enum("label", "truncation") == values(Truncation)
    assert enum("label", "packing") == values(Packing)


def test_template_names_are_the_renderers():
    from sftdata.stages.render import Template

    assert [t.value for t in Template] == values(TemplateName)


def test_help_does_not_import_the_library():
    code = "import sys; from sftdata.cli import main; print(sorted(m for m in sys.modules if m.startswith('sftdata')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = set(json.loads(out.stdout.replace("'", '"')))
    assert loaded <= {"sftdata", "sftdata.cli", "sftdata.choices", "sftdata.cli_options"}, loaded
