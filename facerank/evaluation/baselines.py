"""What ``facerank eval`` compares: facerank embedders and OpenCV's LBPH recognizer, one interface.

A :class:`Scorer` turns aligned chips into features (the timed part: the embedder's cost per
face) and features into a pairwise distance matrix. Embedders give unit vectors compared by
Euclidean distance, on the same scale as the predictor's match threshold. LBPH is the classical
reference of Ahonen et al. as OpenCV ships it: its own 8x8 grid of 256-bin LBP histograms on
grayscale chips, compared the way its ``predict`` does (``compareHist`` with
``HISTCMP_CHISQR_ALT``), so its distances live on another scale and no match threshold applies.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from facerank.descriptor.pretrained import PRETRAINED_VERSION
from facerank.embedding import LBP_VERSION, Embedder
from facerank.errors import FacerankError
from facerank.evaluation.metrics import pairwise_distances
from facerank.faces import ARCFACE_CHIP_112, ChipSpec
from facerank.registry.locate import load_model, model_ref
from facerank.settings import Settings

LBPH = "lbph"
"""The name that selects :class:`LbphScorer` where embedder names are accepted."""

DEFAULT_SCORERS = (LBP_VERSION, LBPH)
"""Always in a default run; the pretrained descriptor joins them when it can be loaded."""

BATCH_SIZE = 64
"""Chips per ``embed`` call, as ``facerank embed`` batches them."""


class Scorer(Protocol):
    """One contender of the comparison."""

    @property
    def name(self) -> str:
        """As given on the command line: a built-in name, ``lbph`` or a model directory."""
        ...

    @property
    def model_version(self) -> str: ...

    @property
    def chip(self) -> ChipSpec:
        """The chip layout alignment must produce for this scorer."""
        ...

    @property
    def unit_distances(self) -> bool:
        """Whether distances are Euclidean distances of unit vectors (0..2), the scale the
        configured match threshold is defined on."""
        ...

    @property
    def match_threshold(self) -> float | None:
        """The model's own calibrated match threshold; None where no threshold applies."""
        ...

    def features(self, chips: np.ndarray) -> np.ndarray:
        """``(N, size, size, 3)`` uint8 RGB chips -> one feature row per chip."""
        ...

    def distances(self, features: np.ndarray) -> np.ndarray:
        """``(N, N)`` symmetric distances between the rows of ``features``."""
        ...

    def pair_distances(
        self, features: np.ndarray, left: np.ndarray, right: np.ndarray
    ) -> np.ndarray:
        """The distance of each row pair ``(left[k], right[k])``, on :meth:`distances`' scale:
        pairs protocols name a few thousand pairs of thousands of faces, not all pairs."""
        ...


class EmbedderScorer:
    """A facerank :class:`Embedder`, fed in batches of :data:`BATCH_SIZE` chips."""

    unit_distances = True

    def __init__(self, name: str, embedder: Embedder) -> None:
        self.name = name
        self.embedder = embedder

    @property
    def model_version(self) -> str:
        return self.embedder.model_version

    @property
    def chip(self) -> ChipSpec:
        return self.embedder.chip

    @property
    def match_threshold(self) -> float | None:
        return self.embedder.match_threshold

    def features(self, chips: np.ndarray) -> np.ndarray:
        batches = [
            self.embedder.embed(chips[start : start + BATCH_SIZE])
            for start in range(0, len(chips), BATCH_SIZE)
        ]
        return np.concatenate(batches) if batches else np.zeros((0, self.embedder.dim))

    def distances(self, features: np.ndarray) -> np.ndarray:
        return pairwise_distances(features)

    def pair_distances(
        self, features: np.ndarray, left: np.ndarray, right: np.ndarray
    ) -> np.ndarray:
        rows = np.asarray(features, dtype=np.float64)
        return np.linalg.norm(rows[left] - rows[right], axis=1)


class LbphScorer:
    """OpenCV's ``LBPHFaceRecognizer`` (radius 1, 8 neighbours, 8x8 grid) as a distance matrix.

    Its histograms come from ``train`` + ``getHistograms``, so they are exactly the ones its
    ``predict`` compares; chips use ``lbp-v0``'s 112 px layout, so both LBP methods see the same
    pixels and differ only in descriptor and comparison.
    """

    name = LBPH
    model_version = LBPH
    chip = ARCFACE_CHIP_112
    unit_distances = False
    match_threshold = None

    def features(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        recognizer = cv2.face.LBPHFaceRecognizer_create()
        gray = [cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY) for chip in chips]
        recognizer.train(gray, np.arange(len(gray), dtype=np.int32))
        return np.concatenate(recognizer.getHistograms())

    def distances(self, features: np.ndarray) -> np.ndarray:
        return chi_square_alt(features)

    def pair_distances(
        self, features: np.ndarray, left: np.ndarray, right: np.ndarray
    ) -> np.ndarray:
        return chi_square_alt_pairs(features, left, right)


def chi_square_alt(histograms: np.ndarray) -> np.ndarray:
    """OpenCV's ``HISTCMP_CHISQR_ALT`` between all rows: ``2 * sum((a - b)^2 / (a + b))``.

    LBPH histograms are sparse (a cell of ~170 pixels fills few of its 256 bins), so each row
    is compared with all later rows on its own non-empty bins only; a bin where ``a`` is empty
    contributes ``b``, which is added as the rest of ``b``'s mass. One vectorised step per row
    instead of a call per pair, exact to float32 rounding, accumulated in float64.
    """
    rows = np.asarray(histograms, dtype=np.float32)
    masses = rows.sum(axis=1, dtype=np.float64)
    result = np.zeros((len(rows), len(rows)), dtype=np.float64)
    for i in range(len(rows) - 1):
        bins = np.flatnonzero(rows[i])
        own, others = rows[i, bins], rows[i + 1 :, bins]
        shared = (np.square(others - own) / (others + own)).sum(axis=1, dtype=np.float64)
        rest = masses[i + 1 :] - others.sum(axis=1, dtype=np.float64)
        result[i, i + 1 :] = 2.0 * (shared + rest)
    return result + result.T


def chi_square_alt_pairs(
    histograms: np.ndarray, left: np.ndarray, right: np.ndarray, *, chunk: int = 256
) -> np.ndarray:
    """:func:`chi_square_alt` of the row pairs ``(left[k], right[k])`` only, ``chunk`` pairs
    at a time (dense rows of 16,384 bins), empty bin pairs contributing nothing."""
    rows = np.asarray(histograms, dtype=np.float32)
    result = np.zeros(len(left), dtype=np.float64)
    for start in range(0, len(left), chunk):
        a = rows[left[start : start + chunk]]
        b = rows[right[start : start + chunk]]
        total = a + b
        terms = np.divide(np.square(a - b), total, out=np.zeros_like(total), where=total > 0)
        result[start : start + chunk] = 2.0 * terms.sum(axis=1, dtype=np.float64)
    return result


def load_scorer(name: str, settings: Settings) -> Scorer:
    """``lbph``, or any model ``FACERANK_MODEL`` could name (built-in, version, path)."""
    if name == LBPH:
        return LbphScorer()
    return EmbedderScorer(name, load_model(model_ref(name, settings), settings))


def default_scorers(settings: Settings) -> tuple[list[Scorer], list[str]]:
    """The default contenders, and a note for each one left out (with the reason)."""
    scorers = [load_scorer(name, settings) for name in DEFAULT_SCORERS]
    try:
        scorers.append(load_scorer(PRETRAINED_VERSION, settings))
    except FacerankError as exc:
        return scorers, [f"{PRETRAINED_VERSION} left out: {exc.code}: {exc}"]
    return scorers, []
