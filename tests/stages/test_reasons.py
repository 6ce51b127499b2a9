"""Every rejection reason the code raises is in the catalogue, and the docs' table is generated from it."""

from __future__ import annotations

import ast
from pathlib import Path

from sftdata.stages.reasons import DOC, REASONS, docs_with_table

PKG = Path(__file__).resolve().parents[2] / "sftdata"
# functions whose (positional) argument N is a reason code
REASON_ARGS = {"Reject": 0, "loads_nested": 2, "Drop": 0}


def raised_codes() -> dict[str, str]:
    """code -> where, for every string literal passed as a reason anywhere in the package."""
    found: dict[str, str] = {}
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                at = REASON_ARGS.get(name)
                if at is not None and len(node.args) > at and isinstance(node.args[at], ast.Constant):
                    found.setdefault(node.args[at].value, f"{path.name}:{node.lineno}")
            # reason codes chosen in an expression (`reason = "a" if x else "b"`)
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "reason" for t in node.targets):
                for const in ast.walk(node.value):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        found.setdefault(const.value, f"{path.name}:{node.lineno}")
    return found


def test_every_raised_reason_is_catalogued():
    codes = raised_codes()
    assert len(codes) >= 30  # the scan itself works
    missing = {code: where for code, where in codes.items() if code not in REASONS}
    assert not missing, f"add these to sftdata/stages/reasons.py: {missing}"


def test_every_catalogued_reason_is_raised_somewhere():
    unused = set(REASONS) - set(raised_codes())
    assert not unused, f"catalogued but never raised: {sorted(unused)}"


def test_docs_table_is_generated_from_the_catalogue():
    text = DOC.read_text()
    assert docs_with_table(text) == text, "run: python -m sftdata.stages.reasons --write-docs"
    for code in REASONS:
        assert f"| `{code}` |" in text
