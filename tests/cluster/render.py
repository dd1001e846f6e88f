"""The overlay a harness test runs: ``infra/overlays/<name>`` as ``kubectl kustomize`` renders
it, through one more kustomize layer that does what an operator would: size training runs for
a test (one epoch of four steps, a small backbone from scratch) by merging literals into the
``facerank-env`` ConfigMap (:data:`SIZING`), and point the notify function at the test's chat
webhook by replacing the ``facerank-notify-webhook`` Secret (the dev example's URL points
nowhere, and prod's is empty until the operator pastes theirs). Nothing else is changed.
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


def render(overlay: str, notify_webhook: str) -> list[dict[str, Any]]:
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
            "secretGenerator": [
                {
                    "name": "facerank-notify-webhook",
                    "behavior": "replace",
                    "literals": [f"url={notify_webhook}"],
                }
            ],
        }
        (layer / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
        result = kustomize(layer)
    assert result.returncode == 0, f"kustomize {overlay} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]
