"""TF.js itself as the reference for graph models: ``tests/js/graphmodel.js`` under Node.

Skips (saying why) where Node or the pinned TF.js packages are missing, like the face-api
reference of ``tests/test_descriptor.py``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

JS_DIR = Path(__file__).resolve().parent.parent / "js"


def run_graph_model(model_json: Path, output: str, images: np.ndarray, work: Path) -> np.ndarray:
    """TF.js's value of node ``output`` of the graph model for ``images`` (N, H, W, 3), flat
    per image: ``(N, values)`` float32."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot run TF.js as the reference")
    for module in ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm"):
        if not (JS_DIR / "node_modules" / module / "package.json").is_file():
            pytest.skip(f"{module} is not installed: run `npm ci --prefix tests/js` first")
    count, height, width, _ = images.shape
    inputs, result = work / f"{model_json.stem}-in.f32", work / f"{model_json.stem}-out.f32"
    images.astype("<f4").tofile(inputs)
    completed = subprocess.run(
        [
            node,
            str(JS_DIR / "graphmodel.js"),
            *("--model", str(model_json), "--output-node", output),
            *("--input", str(inputs), "--shape", f"{count}x{height}x{width}"),
            *("--result", str(result)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return np.fromfile(result, "<f4").reshape(count, -1)
