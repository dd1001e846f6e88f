"""``lbp-v0``: a training-free descriptor so a fresh install ranks faces before any model exists.

Spatially enhanced local binary pattern histograms (Ahonen et al., 2006): the chip is split
into a grid of cells, each cell contributes a histogram of uniform LBP codes at two radii, and
the concatenation is Hellinger-mapped (square root of L1-normalised histograms) so that plain
Euclidean distance between unit vectors approximates the chi-square-like comparisons LBP
is known to work best with. Pure NumPy: no weights, no TensorFlow, microseconds per face.
"""

from __future__ import annotations

import numpy as np

from facerank.embedding.base import check_chips, l2_normalize
from facerank.faces.align import ARCFACE_CHIP_112, ChipSpec

# The 8 neighbours in circular order, as (dy, dx) unit steps; scaled by the radius.
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def _uniform_lut() -> np.ndarray:
    """Map each 8-bit code to one of 59 bins: the 58 uniform patterns, then one for the rest.

    A pattern is uniform when its circular bit string has at most two 0/1 transitions; those
    encode edges, corners and flat areas and make up most of a face's codes.
    """
    lut = np.full(256, 58, dtype=np.int64)
    next_bin = 0
    for code in range(256):
        rotated = ((code << 1) | (code >> 7)) & 0xFF
        if bin(code ^ rotated).count("1") <= 2:
            lut[code] = next_bin
            next_bin += 1
    return lut


_UNIFORM_BINS = 59
_LUT = _uniform_lut()


LBP_VERSION = "lbp-v0"
"""The classical fallback's model version: no weights, so always there."""

LBP_MATCH_THRESHOLD = 0.60
"""Measured with ``facerank eval`` on the AT&T faces Haar detects (1,430 same-person and 60,346
different-person pairs): 0.60 accepts 5.0% of strangers and 67% of genuine pairs; 0.564 would
be FAR 1% (TAR 54%). A conservative point for a weak descriptor."""


class LbpEmbedder:
    """Uniform LBP(8, r) histograms over a ``grid`` x ``grid`` layout of the chip, r in radii."""

    def __init__(
        self, *, chip: ChipSpec = ARCFACE_CHIP_112, grid: int = 7, radii: tuple[int, ...] = (1, 2)
    ) -> None:
        if chip.size < grid * 4:
            raise ValueError(f"chip of {chip.size}px too small for a {grid}x{grid} grid")
        self._chip = chip
        self.grid = grid
        self.radii = radii
        self._cell_index = self._cell_map(chip.size, grid, max(radii))

    @property
    def model_version(self) -> str:
        return LBP_VERSION

    @property
    def chip(self) -> ChipSpec:
        return self._chip

    @property
    def match_threshold(self) -> float:
        return LBP_MATCH_THRESHOLD

    @property
    def dim(self) -> int:
        return self.grid * self.grid * _UNIFORM_BINS * len(self.radii)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        check_chips(chips, self._chip)
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        gray = _luma(chips)
        histograms = [self._histograms(gray, radius) for radius in self.radii]
        return l2_normalize(np.sqrt(np.concatenate(histograms, axis=1)))

    def _histograms(self, gray: np.ndarray, radius: int) -> np.ndarray:
        """Per-cell L1-normalised histograms of uniform codes, flattened per face."""
        codes = _LUT[_lbp_codes(gray, radius, max(self.radii))]
        n_faces = gray.shape[0]
        cells = self.grid * self.grid
        bins = (
            np.arange(n_faces)[:, None, None] * (cells * _UNIFORM_BINS)
            + self._cell_index[None] * _UNIFORM_BINS
            + codes
        )
        counts = np.bincount(bins.ravel(), minlength=n_faces * cells * _UNIFORM_BINS)
        counts = counts.reshape(n_faces, cells, _UNIFORM_BINS).astype(np.float32)
        counts /= np.maximum(counts.sum(axis=2, keepdims=True), 1.0)
        return counts.reshape(n_faces, -1)

    @staticmethod
    def _cell_map(size: int, grid: int, margin: int) -> np.ndarray:
        """Cell number of each interior pixel (the ``margin`` border has no full neighbourhood)."""
        inner = size - 2 * margin
        rows = np.minimum(np.arange(inner) * grid // inner, grid - 1)
        return rows[:, None] * grid + rows[None, :]


def _luma(chips: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma as int16, enough range for the neighbour comparisons."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.rint(chips.astype(np.float32) @ weights).astype(np.int16)


def _lbp_codes(gray: np.ndarray, radius: int, margin: int) -> np.ndarray:
    """8-bit LBP codes of every pixel at least ``margin`` from the border, for a batch."""
    size = gray.shape[1]
    inner = slice(margin, size - margin)
    centre = gray[:, inner, inner]
    codes = np.zeros(centre.shape, dtype=np.uint8)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        neighbour = gray[
            :,
            margin + dy * radius : size - margin + dy * radius,
            margin + dx * radius : size - margin + dx * radius,
        ]
        codes |= (neighbour >= centre).astype(np.uint8) << bit
    return codes
