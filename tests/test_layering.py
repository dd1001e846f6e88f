"""Architecture rules that code review alone would let slip.

``facerank/`` is the bottom layer: it must never import a component package, or the
one-process-per-component model of ``facerank up`` and the container images breaks. And the
CLI must start without TensorFlow, which costs seconds to import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = {"functions", "training", "inference"}


def imported_top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path", sorted((ROOT / "facerank").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_core_package_imports_no_component(path: Path) -> None:
    assert imported_top_level_names(path).isdisjoint(COMPONENTS)


APPLICATION = ("facerank.cli", "facerank.supervisor", "facerank.demo", "facerank.broker")
"""The embedded application inside ``facerank/`` (ARCHITECTURE.md says why it stays there)."""


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports by absolute name (``from a import b`` counts ``a.b`` too,
    in case ``b`` is a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_application(name: str) -> bool:
    return any(name == app or name.startswith(app + ".") for app in APPLICATION)


@pytest.mark.parametrize(
    "path",
    sorted(
        path
        for package in ("facerank", *COMPONENTS)
        for path in (ROOT / package).rglob("*.py")
        if not is_application(module_name(path))
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_nothing_but_the_application_imports_the_application(path: Path) -> None:
    """The core and the components run in a cluster, where the embedded application does not."""
    assert not {name for name in imported_modules(path) if is_application(name)}


def test_the_application_check_sees_an_import_of_it(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from facerank import cli\nimport facerank.broker.spool\n")
    assert {n for n in imported_modules(module) if is_application(n)} == {
        "facerank.cli",
        "facerank.broker.spool",
    }


def test_cli_starts_without_tensorflow() -> None:
    code = (
        "import sys, facerank.cli.main, facerank.pipeline;"
        "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
