"""The shape of the package: no import cycle, choices spelled once, each module importable alone."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from sftdata.choices import (
    Dedupe,
    Encoder,
    InputFormat,
    Packing,
    TemplateName,
    TrainOn,
    TreePaths,
    Truncation,
    values,
)

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


IMPORT_EACH = """
import importlib, json, sys
bad = []
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "sftdata" or m.startswith("sftdata.")]:
        del sys.modules[loaded]  # each module starts from no sftdata module; third-party ones stay loaded
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - reported by name
        bad.append([name, f"{type(exc).__name__}: {exc}"])
print(json.dumps(bad))
"""


def test_every_module_imports_alone():
    """Each module imports with no other sftdata module loaded before it (one interpreter for all:
    the package's own modules are dropped from ``sys.modules`` between two imports)."""
    mods = sorted(m for m in graph() if not m.endswith("__main__"))
    out = subprocess.run([sys.executable, "-c", IMPORT_EACH, json.dumps(mods)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and json.loads(out.stdout) == [], out.stdout + out.stderr


def test_a_module_that_fails_alone_is_found(tmp_path):
    """The check above notices an import-order dependency (a name taken from a module not loaded yet)."""
    pkg = tmp_path / "sftdata_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import sftdata_probe\nX = sftdata_probe.b.Y\n")
    (pkg / "b.py").write_text("Y = 1\n")
    code = IMPORT_EACH.replace('"sftdata"', '"sftdata_probe"').replace('"sftdata."', '"sftdata_probe."')
    out = subprocess.run([sys.executable, "-c", code, json.dumps(["sftdata_probe.b", "sftdata_probe.a"])],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert [name for name, _ in json.loads(out.stdout)] == ["sftdata_probe.a"], out.stdout + out.stderr


def test_schema_choices_are_the_enums():
    schema = json.loads((PKG / "schemas" / "pipeline.schema.json").read_text())
    stages = schema["properties"]["stages"]["properties"]

    def enum(stage, key):
        return stages[stage]["properties"][key]["enum"]

    assert enum("read", "format") == values(InputFormat)
    assert enum("read", "tree_paths") == values(TreePaths)
    assert enum("validate", "dedupe") == values(Dedupe)
    assert enum("render", "template") == values(TemplateName)
    assert enum("render", "encoder") == values(Encoder)
    assert enum("label", "train_on") == values(TrainOn)
    assert enum("label", "truncation") == values(Truncation)
    assert enum("label", "packing") == values(Packing)


def test_template_names_are_the_renderers():
    from sftdata.stages.render import Template

    assert [t.value for t in Template] == values(TemplateName)


HEAVY = ("torch", "transformers", "datasets", "pyarrow", "numpy", "pandas", "trl")


def test_help_imports_no_heavy_library():
    """`sftdata --help` (every command registered) and a command's own --help load none of the
    heavy libraries: command modules import click and small things at module level only."""
    code = ("import sys\nfrom sftdata.cli import main\n"
            "try:\n    main(sys.argv[1:], prog_name='sftdata')\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    from sftdata.cli import main

    for args in [["--help"]] + [[name, "--help"] for name in main.list_commands(None)]:
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == "[]", (args, out.stdout[-300:])
    listing = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert all(f"  {name} " in listing for name in main.list_commands(None)), listing


def test_import_sftdata_imports_no_heavy_library():
    """`import sftdata` (the Python API's names) loads none of the heavy libraries: the API's
    modules import them inside the functions that need them."""
    code = ("import sys\nimport sftdata\nassert callable(sftdata.encode) and callable(sftdata.map_fn)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-300:]
