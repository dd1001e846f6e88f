"""68-point face landmarks, and the dlib face-chip transform they give.

Why: a face chip aligned on landmarks (the corners of both eyes and the base of the nose fitted
to a mean face) is what dlib's face descriptor was trained on; the Haar box, or two eye centres
from a cascade, only approximate it. The landmarks come from face-api's ``faceLandmark68Net``
(ported by :mod:`facerank.descriptor.landmarks`), fed exactly as face-api feeds it: the face
box clipped to the image, zero-padded to a square (centred) and resized to 112 px with TF's
legacy bilinear sampling; its output is mapped back the way face-api's ``postProcess`` does.

The chip transform is dlib's ``get_face_chip_details`` for a 5-point shape, pixel for pixel:
a least-squares similarity from the template points to the image points, turned into dlib's
extraction rectangle whose corners are chip pixels ``0`` and ``size - 1``.

TensorFlow is imported only when :class:`LandmarkLocator` first runs its model.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerank.errors import ModelLoadError
from facerank.faces.detect import Box

FloatBox = tuple[float, float, float, float]

LANDMARK_MODEL_NAME = "landmarks68-v1"
"""Folder name of the exported landmark SavedModel under ``cache_dir/models``."""

LANDMARK_INPUT_SIZE = 112
SIGNATURE = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "points"
"""The SavedModel's interface: ``images`` (N, 112, 112, 3) float32 0..255 -> ``points`` (N,
136), interleaved x, y as fractions of the input."""

DLIB_FIVE_FROM_68 = (45, 42, 36, 39, 33)
"""68-point indices of dlib's 5-point shape, in its order: the outer and inner corner of the eye
on the image's right, the outer and inner corner of the other eye, the base of the nose
(dlib's 5-point template matches its 68-point mean face at exactly these points)."""

DLIB_FIVE_TEMPLATE = np.array(
    [
        (0.8595674595992, 0.2134981538014),
        (0.6460604764104, 0.2289674387677),
        (0.1205750620789, 0.2137274526848),
        (0.3340850613712, 0.2290642403242),
        (0.4901123135679, 0.6277975316475),
    ]
)
"""dlib's mean 5-point face in a unit square (``get_face_chip_details``)."""

DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25
"""dlib's face-recognition chips: 150 px, 0.25 of the face's width added on each side."""

NET_BOX_SCALE = 1.15
"""The net sees the detector's box grown by this factor about its centre. face-api feeds it
SSD boxes, whose longer side (the one ``padToSquare`` keeps) measured 1.12 (face-api's sample
photos) to 1.20 (AT&T faces) times the Haar box's; from 1.15 to 1.25 the landmarks move least
when the box jitters by 5% (1.2% of the eye distance, against 1.5% on the bare Haar box)."""

MAX_FIT_ERROR = 0.04
"""Largest RMS distance, as a fraction of the chip size, between the five fitted points and
dlib's template before the landmarks count as implausible. Measured: AT&T faces median 0.010,
maximum 0.032; real faces in face-api's sample photos at most 0.027; Haar's false detections
there 0.034 to 0.42."""

EYE_SPAN = (0.30, 0.65)
"""Plausible distance between the two eye centres as a fraction of the detector's box width.
Measured: AT&T faces 0.35 to 0.49, real faces in the sample photos 0.32 to 0.42, Haar's false
detections there 0.06 to 0.28."""

MAX_ROLL_DEGREES = 40.0
"""The Haar cascade finds upright faces (AT&T: fitted roll at most 14 degrees); a steeper
fitted roll means the landmarks, not the face, are off."""


@dataclass(frozen=True)
class LandmarkChip:
    """A face's dlib chip transform and how well its landmarks fit dlib's mean face."""

    transform: np.ndarray
    """2x3 matrix from image pixels to pixels of dlib's 150 px chip."""

    fit_error: float
    """RMS distance of the five points from the template, as a fraction of the chip size."""

    roll_degrees: float
    eye_span: float
    """Distance between the eye centres, in image pixels."""


def net_box(box: Box) -> FloatBox:
    """The region the net is fed for a detector box: grown by :data:`NET_BOX_SCALE`."""
    x, y, w, h = box
    grow = (NET_BOX_SCALE - 1) / 2
    return x - grow * w, y - grow * h, w * NET_BOX_SCALE, h * NET_BOX_SCALE


def face_crop(box: FloatBox, height: int, width: int) -> Box | None:
    """The box face-api crops: clipped to the image and floored; None if nothing is left."""
    x, y, w, h = box
    left, top = max(x, 0), max(y, 0)
    crop_w = math.floor(min(x + w - left, width - left))
    crop_h = math.floor(min(y + h - top, height - top))
    if crop_w <= 0 or crop_h <= 0:
        return None
    return math.floor(left), math.floor(top), crop_w, crop_h


def net_input(image: np.ndarray, crop: Box) -> np.ndarray:
    """``crop`` of the RGB ``image`` as the net's ``(112, 112, 3)`` float32 input.

    face-api's ``padToSquare`` (zeros, the larger half after the face) followed by
    ``resizeBilinear`` with ``alignCorners`` and ``halfPixelCenters`` off: output pixel ``i``
    samples ``i * side / 112`` of the padded square, clamped at its last pixel, blending as
    TF.js does (across, then down). Sampled straight from the crop, so a large face is never
    padded or converted to float whole.
    """
    x, y, w, h = crop
    side = max(w, h)
    rows = _Taps.along(side, _pad_before(side - h), h)
    cols = _Taps.along(side, _pad_before(side - w), w)
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
    """Legacy bilinear taps along one axis: crop indices, whether each lies in the crop (not
    in the zero padding), and the blend fraction."""

    low: np.ndarray
    low_inside: np.ndarray
    high: np.ndarray
    high_inside: np.ndarray
    fraction: np.ndarray

    @classmethod
    def along(cls, side: int, before: int, length: int) -> _Taps:
        """Taps of a ``side`` px padded axis holding ``length`` crop pixels after ``before``."""
        scale = np.float32(side) / np.float32(LANDMARK_INPUT_SIZE)
        position = np.arange(LANDMARK_INPUT_SIZE, dtype=np.float32) * scale
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


def points_from_output(output: np.ndarray, crop: Box) -> np.ndarray:
    """The net's 136 values for ``crop`` -> ``(68, 2)`` image pixels (face-api's postProcess)."""
    x, y, w, h = crop
    scale = LANDMARK_INPUT_SIZE / max(w, h)
    width, height = w * scale, h * scale
    pad_x = abs(width - height) / 2 if width < height else 0.0
    pad_y = abs(width - height) / 2 if height < width else 0.0
    points = np.asarray(output, np.float64).reshape(68, 2) * LANDMARK_INPUT_SIZE
    relative = (points - (pad_x, pad_y)) / (width, height)
    return relative * (w, h) + (x, y)


class LandmarkLocator:
    """Face boxes in a photo -> 68 landmarks each, with the exported landmark SavedModel.

    The model is loaded on first use (TensorFlow is imported then, not at construction), once,
    even when several threads locate at the same time; its serving signature is thread-safe.
    """

    def __init__(self, model_dir: Path, *, batch_size: int = 64) -> None:
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._serve: Any = None
        self._loaded: Any = None

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """The raw net: ``(N, 112, 112, 3)`` float32 -> ``(N, 136)`` float32."""
        import tensorflow as tf

        serve = self._signature()
        out = np.empty((len(inputs), 136), dtype=np.float32)
        for start in range(0, len(inputs), self.batch_size):
            batch = tf.convert_to_tensor(inputs[start : start + self.batch_size], tf.float32)
            out[start : start + len(batch)] = serve(**{INPUT_NAME: batch})[OUTPUT_NAME]
        return out

    def locate(self, image: np.ndarray, boxes: Sequence[Box]) -> list[np.ndarray | None]:
        """``(68, 2)`` image-pixel landmarks per detector box of the RGB ``image``, in one batch.

        Each box is grown by :data:`NET_BOX_SCALE` first. A box with nothing inside the image
        gets None.
        """
        height, width = image.shape[:2]
        crops = [face_crop(net_box(box), height, width) for box in boxes]
        usable = [c for c in crops if c is not None]
        if not usable:
            return [None] * len(crops)
        outputs = iter(self.predict(np.stack([net_input(image, c) for c in usable])))
        return [None if c is None else points_from_output(next(outputs), c) for c in crops]

    def _signature(self) -> Any:
        with self._lock:
            if self._serve is None:
                self._loaded, self._serve = _load_signature(self.model_dir)
            return self._serve


def _load_signature(directory: Path) -> tuple[Any, Any]:
    """Load the SavedModel and check its signature is the landmark net's."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(directory))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise ModelLoadError(f"cannot load the landmark model from {directory}: {exc}") from None
    signature = loaded.signatures.get(SIGNATURE)
    inputs = {} if signature is None else signature.structured_input_signature[1]
    size = LANDMARK_INPUT_SIZE
    if INPUT_NAME not in inputs or inputs[INPUT_NAME].shape.as_list() != [None, size, size, 3]:
        raise ModelLoadError(f"{directory}: not a landmark model (no {SIGNATURE} for images)")
    if signature.structured_outputs.get(OUTPUT_NAME) is None:
        raise ModelLoadError(f"{directory}: the landmark model has no {OUTPUT_NAME!r} output")
    return loaded, signature


def landmark_chip(points: np.ndarray) -> LandmarkChip:
    """dlib's ``get_face_chip_details(shape5, 150, 0.25)`` for 68 landmarks, as a transform.

    dlib fits ``image ~ a * template + b`` (complex numbers: rotation and scale ``a``) by least
    squares, then extracts the chip from a rectangle of ``size * |a|`` centred on the
    template's centre, with chip pixels ``0`` and ``size - 1`` on its edges. The inverse of
    that mapping is returned as image -> chip pixels. Raises ValueError when the five points
    are not finite or span less than a pixel of chip (no transform exists).
    """
    size = DLIB_CHIP_SIZE
    template = (DLIB_CHIP_PADDING + DLIB_FIVE_TEMPLATE) / (2 * DLIB_CHIP_PADDING + 1) * size
    source = template[:, 0] + 1j * template[:, 1]
    five = np.asarray(points, np.float64)[list(DLIB_FIVE_FROM_68)]
    target = five[:, 0] + 1j * five[:, 1]
    centred = source - source.mean()
    a = np.vdot(centred, target - target.mean()) / np.vdot(centred, centred).real
    if not np.isfinite(a) or size * abs(a) <= 1:
        raise ValueError("the landmarks do not span a face chip")
    b = target.mean() - a * source.mean()
    centre = a * complex(size / 2, size / 2) + b
    stretch = (size * abs(a) - 1) / (size - 1)
    # image z = centre + rotation * stretch * (u - (size - 1)/2 * (1 + i)) for chip pixel u
    to_image = a / abs(a) * stretch
    inverse = 1 / to_image
    offset = (size - 1) / 2 * (1 + 1j) - inverse * centre
    transform = np.array(
        [[inverse.real, -inverse.imag, offset.real], [inverse.imag, inverse.real, offset.imag]]
    )
    fitted = (target - b) / a
    eyes = target[[0, 1]].mean() - target[[2, 3]].mean()
    return LandmarkChip(
        transform=transform,
        fit_error=float(np.sqrt(np.mean(np.abs(fitted - source) ** 2)) / size),
        roll_degrees=math.degrees(float(np.angle(a))),
        eye_span=float(abs(eyes)),
    )


def plausible_chip(points: np.ndarray, box: Box) -> LandmarkChip | None:
    """The dlib chip of ``points`` if they look like a face in ``box``, else None."""
    try:
        chip = landmark_chip(points)
    except ValueError:
        return None
    return chip if plausible(chip, box) else None


def plausible(chip: LandmarkChip, box: Box) -> bool:
    """Whether the landmarks look like a face in ``box``: a fit to dlib's mean face within
    :data:`MAX_FIT_ERROR`, eyes :data:`EYE_SPAN` apart, roll below :data:`MAX_ROLL_DEGREES`."""
    low, high = EYE_SPAN
    return (
        chip.fit_error <= MAX_FIT_ERROR
        and low * box[2] <= chip.eye_span <= high * box[2]
        and abs(chip.roll_degrees) <= MAX_ROLL_DEGREES
    )
