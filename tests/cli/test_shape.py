"""The package's size rules: modules of at most 350 lines, functions of at most 60, no import cycle
counting imports inside functions too, and batch planning free of training."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "sftdata"
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


def imports_anywhere(name: str, path: Path, tree: ast.Module, known: set[str]) -> set[str]:
    """sftdata modules ``name`` imports at module level, in functions or under TYPE_CHECKING."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            found |= subs | ({base} if len(subs) < len(node.names) else set())
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: imports_anywhere(name, p, tree, set(mods)) for name, (p, tree) in mods.items()}


def test_cycles_finds_a_cycle_through_a_function_import():
    tree = ast.parse("def f():\n    from sftdata.b import x\n")
    deps = imports_anywhere("sftdata.a", PKG / "a.py", tree, {"sftdata.a", "sftdata.b"})
    assert deps == {"sftdata.b"}
    assert cycles({"sftdata.a": deps, "sftdata.b": {"sftdata.a"}}) == [["sftdata.a", "sftdata.b"]]


def test_no_import_cycle_even_inside_functions():
    assert cycles(_graph()) == []


def test_planning_imports_nothing_of_training():
    graph = _graph()
    bad = {m: sorted(d for d in deps if d.startswith("sftdata.training"))
           for m, deps in graph.items() if m.startswith("sftdata.planning")}
    assert not any(bad.values()), bad


def test_modules_and_functions_stay_small():
    long_modules, long_functions = [], []
    for name, (path, tree) in _modules().items():
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines > MAX_MODULE_LINES:
            long_modules.append((name, lines))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append((f"{name}.{node.name}", n))
    assert not long_modules, long_modules
    assert not long_functions, long_functions
