"""The embedder contract shared by enrollment, search, evaluation and training.

An embedder turns a batch of aligned face chips into L2-normalised float32 vectors. Distances
are only meaningful between vectors of the same ``model_version``, which is why every stored
embedding and every query carries it.
"""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np

from facerank.errors import ChipShapeError, ModelLoadError
from facerank.faces.align import ChipSpec

VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Embedder(Protocol):
    """Batch of aligned faces -> ``(N, dim)`` float32, each row of unit L2 norm."""

    @property
    def model_version(self) -> str:
        """Names the weights; embeddings of different versions are never compared."""
        ...

    @property
    def chip(self) -> ChipSpec:
        """The chip layout this embedder was trained on; alignment must produce it."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def match_threshold(self) -> float:
        """The largest distance this model calls a match, calibrated with ``facerank eval``.

        It belongs to the model, not to the deployment: distance scales differ by model, so a
        model switch must change the threshold together with the embeddings.
        """
        ...

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """``(N, size, size, 3)`` uint8 RGB chips -> ``(N, dim)`` float32, unit rows."""
        ...


def validate_model_version(version: str) -> str:
    """Model versions end up in object keys and URLs: keep them to a safe alphabet."""
    if not VERSION_PATTERN.fullmatch(version):
        raise ModelLoadError(
            f"invalid model version {version!r}: use 1-64 of [A-Za-z0-9._-], starting alphanumeric"
        )
    return version


def check_chips(chips: np.ndarray, spec: ChipSpec) -> np.ndarray:
    """Refuse chips that were not aligned for this embedder, instead of embedding garbage."""
    expected = (spec.size, spec.size, 3)
    if chips.ndim != 4 or chips.shape[1:] != expected or chips.dtype != np.uint8:
        raise ChipShapeError(
            f"expected uint8 chips of shape (N, {spec.size}, {spec.size}, 3), "
            f"got {chips.dtype} {chips.shape}"
        )
    return chips


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit rows in float32; an all-zero row stays zero rather than becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))
