"""The overlay a harness test runs: ``infra/overlays/<name>`` as ``kubectl kustomize`` renders
it, through one more kustomize layer that sizes training runs for a test (one epoch of four
steps, a small backbone from scratch) the way an operator would, by merging literals into the
``facerank-env`` ConfigMap. Nothing else is changed; the layer is printed by :data:`SIZING`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.plugins.infra import kustomize, prepare_copy

SIZING = (
    "FACERANK_RETRAIN_BACKBONE=scratch",
    "FACERANK_RETRAIN_EPOCHS=1",
    "FACERANK_RETRAIN_STEPS_PER_EPOCH=4",
)


def render(overlay: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="facerank-harness-") as work:
        infra = prepare_copy(Path(work))
        layer = infra / "overlays" / f"harness-{overlay}"
        layer.mkdir()
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [f"../{overlay}"],
            "configMapGenerator": [
                {"name": "facerank-env", "behavior": "merge", "literals": list(SIZING)}
            ],
        }
        (layer / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
        result = kustomize(layer)
    assert result.returncode == 0, f"kustomize {overlay} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]
