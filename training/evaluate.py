"""The chief's last steps: score the candidate and the baseline on held-out identities, export.

Both models embed the same held-out faces (identities no worker trained on) and are scored by
:func:`facerank.evaluation.metrics.evaluate_embeddings`, the numbers ``facerank eval`` reports
and the promotion gate compares. The baseline gets the faces re-aligned from the run's chips
into its own chip layout when it uses another one.

The candidate is scored as a Keras model before it is exported, so that its card can carry the
match threshold measured on those identities (the distance at a false accept rate of 1 %);
the export computes the same function plus the L2 normalisation applied here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from facerank.embedding.base import l2_normalize
from facerank.embedding.savedmodel import DEFAULT_MATCH_THRESHOLD
from facerank.evaluation.metrics import Metrics, evaluate_embeddings
from facerank.faces.align import ChipSpec, rechip
from facerank.registry.locate import load_model, model_ref
from facerank.settings import Settings

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

CALIBRATION_FAR = 1e-2
"""The false accept rate the exported model's match threshold is set for."""
BATCH = 64


def embed_with_model(model: keras.Model, chips: np.ndarray) -> np.ndarray:
    """Unit embeddings of uint8 chips by a Keras backbone, in inference mode."""
    out = [
        np.asarray(model(chips[i : i + BATCH].astype(np.float32), training=False))
        for i in range(0, len(chips), BATCH)
    ]
    return l2_normalize(np.concatenate(out))


def score(vectors: np.ndarray, labels: np.ndarray, threshold: float | None) -> Metrics:
    """The harness's metrics, with TAR at FAR 1e-2 (the calibration point) and 1e-3."""
    return evaluate_embeddings(
        vectors, labels, threshold=threshold, far_targets=(CALIBRATION_FAR, 1e-3)
    )


def score_baseline(
    name: str,
    settings: Settings,
    chips: np.ndarray,
    chip: ChipSpec,
    labels: np.ndarray,
    threshold: float | None,
) -> tuple[str, Metrics]:
    """The baseline's version and its metrics on ``chips`` (laid out as ``chip``)."""
    embedder = load_model(model_ref(name, settings), settings)
    if embedder.chip != chip:
        chips = np.stack([rechip(c, chip, embedder.chip) for c in chips])
    log.info("scoring baseline %s on %d held-out faces", embedder.model_version, len(chips))
    return embedder.model_version, score(embedder.embed(chips), labels, threshold)


def calibrated_threshold(metrics: Metrics | None) -> float:
    """The distance accepting at most 1 % of held-out impostor pairs; the format's default
    when there was nothing to measure on."""
    if metrics is None:
        return DEFAULT_MATCH_THRESHOLD
    [point] = [p for far, p in metrics.tar_at_far if far == CALIBRATION_FAR]
    return float(min(max(point.threshold, 1e-6), 2.0))
