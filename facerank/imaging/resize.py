"""face-api's network input: a region zero-padded to a square, resized as TF.js resizes.

Why here: both face-api networks facerank ports see their input this way, and only the side
the padding goes differs: the landmark net's crop is padded evenly (``padToSquare(x, true)``),
the SSD detector's whole photo at the bottom and right (``toBatchTensor(512, false)``). The
resize is TF's legacy ``resizeBilinear`` (``alignCorners`` and ``halfPixelCenters`` off):
output pixel ``i`` samples ``i * side / size`` of the padded square, clamped at its last pixel,
blending across, then down. It is sampled straight from the region, so a large photo is never
padded or converted to float whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Region = tuple[int, int, int, int]
"""``(x, y, w, h)`` in whole pixels, inside the image."""


def square_resize(image: np.ndarray, region: Region, size: int, *, centred: bool) -> np.ndarray:
    """``region`` of the RGB ``image`` padded to a square with zeros and resized to ``size``.

    ``centred``: the padding is split, the larger half after the region (``padToSquare(x,
    true)``); otherwise all of it goes after (below or right of) the region. Returns
    ``(size, size, 3)`` float32 in the image's value range.
    """
    x, y, w, h = region
    side = max(w, h)
    rows = _Taps.along(side, size, _pad_before(side - h) if centred else 0, h)
    cols = _Taps.along(side, size, _pad_before(side - w) if centred else 0, w)
    patch = image[y : y + h, x : x + w]

    def pixels(
        row: np.ndarray, row_inside: np.ndarray, col: np.ndarray, col_inside: np.ndarray
    ) -> np.ndarray:
        inside = (row_inside[:, None] & col_inside[None, :])[..., None]
        return patch[row][:, col].astype(np.float32) * inside

    fx, fy = cols.fraction[None, :, None], rows.fraction[:, None, None]
    top_left = pixels(rows.low, rows.low_inside, cols.low, cols.low_inside)
    top_right = pixels(rows.low, rows.low_inside, cols.high, cols.high_inside)
    bottom_left = pixels(rows.high, rows.high_inside, cols.low, cols.low_inside)
    bottom_right = pixels(rows.high, rows.high_inside, cols.high, cols.high_inside)
    top = top_left + (top_right - top_left) * fx
    bottom = bottom_left + (bottom_right - bottom_left) * fx
    return top + (bottom - top) * fy


def _pad_before(difference: int) -> int:
    """``padToSquare(x, true)`` appends ``round(difference / 2)`` and prepends the rest."""
    return difference - math.floor(difference * 0.5 + 0.5)


@dataclass(frozen=True)
class _Taps:
    """Legacy bilinear taps along one axis: region indices, whether each lies in the region
    (not in the zero padding), and the blend fraction."""

    low: np.ndarray
    low_inside: np.ndarray
    high: np.ndarray
    high_inside: np.ndarray
    fraction: np.ndarray

    @classmethod
    def along(cls, side: int, size: int, before: int, length: int) -> _Taps:
        """Taps of ``size`` outputs over a ``side`` px padded axis holding ``length`` region
        pixels after ``before`` zeros."""
        scale = np.float32(side) / np.float32(size)
        position = np.arange(size, dtype=np.float32) * scale
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, side - 1)
        low_inside = (low >= before) & (low < before + length)
        high_inside = (high >= before) & (high < before + length)
        return cls(
            low=np.clip(low - before, 0, length - 1),
            low_inside=low_inside,
            high=np.clip(high - before, 0, length - 1),
            high_inside=high_inside,
            fraction=(position - low).astype(np.float32),
        )
