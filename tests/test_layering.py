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


def test_cli_starts_without_tensorflow() -> None:
    code = (
        "import sys, facerank.cli.main, facerank.pipeline;"
        "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
