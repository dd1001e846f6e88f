"""One home for each error: no two error classes share a name or a stable ``code``.

Errors live in ``facerank/errors.py`` when several packages share them and beside their module
otherwise (see its docstring); this keeps the two kinds from growing twins. Read from the
source, so no module (and no TensorFlow) is imported.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("facerank", "functions", "training", "inference")


def error_classes() -> list[tuple[str, str, str | None]]:
    """``(where, class name, code)`` of every class named ``*Error`` in the packages."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                    found.append((where, node.name, _code(node)))
    return found


def _code(node: ast.ClassDef) -> str | None:
    for statement in node.body:
        if (
            isinstance(statement, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "code" for t in statement.targets)
            and isinstance(statement.value, ast.Constant)
        ):
            return str(statement.value.value)
    return None


def test_the_scan_sees_the_catalogue() -> None:
    names = {name for where, name, _ in error_classes() if where == "facerank/errors.py"}
    assert {"FacerankError", "UnauthorizedError", "ConfigError"} <= names


def test_no_two_error_classes_share_a_name() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for where, name, _ in error_classes():
        homes[name].append(where)
    assert {name: w for name, w in homes.items() if len(w) > 1} == {}


def test_no_two_error_classes_share_a_code() -> None:
    owners: dict[str, list[str]] = defaultdict(list)
    for where, name, code in error_classes():
        if code is not None:
            owners[code].append(f"{where}:{name}")
    assert {code: o for code, o in owners.items() if len(o) > 1} == {}
