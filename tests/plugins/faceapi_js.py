"""face-api's own JavaScript under Node, the numerical reference of the Keras ports.

``node_bundle`` is the extracted package once node and the pinned TF.js modules
(``npm ci --prefix tests/js``) are there, else the test skips saying why; :func:`run_face_api`
runs one of the ``tests/js`` scripts on images of any shapes, as they all take them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from facerank.descriptor.pretrained import package_model_dir
from facerank.settings import Settings

JS_DIR = Path(__file__).resolve().parent.parent / "js"


@pytest.fixture(scope="session")
def node_bundle(package_files: Path) -> Path:
    """face-api's extracted package, once node and the pinned TF.js modules are there."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: cannot run face-api's JavaScript as the reference")
    for module in ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm"):
        if not (JS_DIR / "node_modules" / module / "package.json").is_file():
            pytest.skip(f"{module} is not installed: run `npm ci --prefix tests/js` first")
    return package_files


def run_face_api(
    script: str,
    bundle: Path,
    settings: Settings,
    images: list[np.ndarray],
    *,
    mode: str,
    output: Path,
    timeout: float = 300,
) -> None:
    """``node tests/js/<script>`` in ``mode`` on ``images`` (float32 files next to ``output``),
    with the package's weights from ``settings``' cache; fails the test if node does."""
    inputs = output.parent / "images.f32"
    np.concatenate([i.astype("<f4").ravel() for i in images]).tofile(inputs)
    result = subprocess.run(
        [
            "node",
            str(JS_DIR / script),
            *("--package", str(bundle), "--model", str(package_model_dir(settings))),
            *("--input", str(inputs), "--mode", mode),
            *("--shapes", ",".join(f"{i.shape[0]}x{i.shape[1]}" for i in images)),
            *("--output", str(output)),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
