"""68-point face landmarks, and the dlib face-chip transform they give.

Why: a face chip aligned on landmarks (the corners of both eyes and the base of the nose fitted
to a mean face) is what dlib's face descriptor was trained on; the Haar box, or two eye centres
from a cascade, only approximate it. The landmarks come from face-api's ``faceLandmark68Net``
(ported by :mod:`facerank.descriptor.landmarks`), fed exactly as face-api feeds it: the face
region (the detector's box, grown by its :class:`~facerank.faces.detect.BoxGeometry`'s
``landmark_scale``) clipped to the image, zero-padded to a square (centred) and resized to
112 px with TF's legacy bilinear sampling; its output is mapped back the way face-api's
``postProcess`` does.

The chip transform is dlib's ``get_face_chip_details`` for a 68-point shape, pixel for pixel:
a least-squares similarity from dlib's mean face to 33 of the landmarks (eyes, nose, outer
lips: dlib leaves out the jaw, the brows and the lower lip), turned into dlib's extraction
rectangle whose corners are chip pixels ``0`` and ``size - 1``. Fitting 33 points rather than
dlib's five averages out the landmark net's errors: LFW View 1 DevTest 98.7 % against 98.2 %
with the five (the default pipeline, dlib-r34-v1; ``bench/results/lfw-alignment-ablation.json``).
Whether the landmarks look like a face is still judged on the five (:func:`plausible`), where
its bounds were measured.

TensorFlow is imported only when :class:`LandmarkLocator` first runs its model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerank.faces.detect import Box, FloatBox
from facerank.faces.netserve import ServedNet
from facerank.imaging.resize import square_resize

LANDMARK_MODEL_NAME = "landmarks68-v1"
"""Folder name of the exported landmark SavedModel under ``cache_dir/models``."""

LANDMARK_INPUT_SIZE = 112
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

DLIB_MEAN_FACE = np.array(
    [
        (0.000213256, 0.106454),
        (0.0752622, 0.038915),
        (0.18113, 0.0187482),
        (0.29077, 0.0344891),
        (0.393397, 0.0773906),
        (0.586856, 0.0773906),
        (0.689483, 0.0344891),
        (0.799124, 0.0187482),
        (0.904991, 0.038915),
        (0.98004, 0.106454),
        (0.490127, 0.203352),
        (0.490127, 0.307009),
        (0.490127, 0.409805),
        (0.490127, 0.515625),
        (0.36688, 0.587326),
        (0.426036, 0.609345),
        (0.490127, 0.628106),
        (0.554217, 0.609345),
        (0.613373, 0.587326),
        (0.121737, 0.216423),
        (0.187122, 0.178758),
        (0.265825, 0.179852),
        (0.334606, 0.231733),
        (0.260918, 0.245099),
        (0.182743, 0.244077),
        (0.645647, 0.231733),
        (0.714428, 0.179852),
        (0.793132, 0.178758),
        (0.858516, 0.216423),
        (0.79751, 0.244077),
        (0.719335, 0.245099),
        (0.254149, 0.780233),
        (0.340985, 0.745405),
        (0.428858, 0.727388),
        (0.490127, 0.742578),
        (0.551395, 0.727388),
        (0.639268, 0.745405),
        (0.726104, 0.780233),
        (0.642159, 0.864805),
        (0.556721, 0.902192),
        (0.490127, 0.909281),
        (0.423532, 0.902192),
        (0.338094, 0.864805),
        (0.290379, 0.784792),
        (0.428096, 0.778746),
        (0.490127, 0.785343),
        (0.552157, 0.778746),
        (0.689874, 0.784792),
        (0.553364, 0.824182),
        (0.490127, 0.831803),
        (0.42689, 0.824182),
    ]
)
"""dlib's mean face, points 17 to 67 of the 68 in a unit square (``get_face_chip_details``'s
``mean_face_shape_x`` / ``_y``)."""

DLIB_CHIP_POINTS = tuple(i for i in range(27, 68) if not (55 <= i <= 59 or 65 <= i <= 67))
"""The 68-point indices dlib fits the chip to: nose, eyes and outer lips (17 to 26, the brows,
and the lower lip, 55 to 59 and 65 to 67, are left out)."""

DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25
"""dlib's face-recognition chips: 150 px, 0.25 of the face's width added on each side."""

MAX_FIT_ERROR = 0.04
"""Largest RMS distance, as a fraction of the chip size, between the five fitted points and
dlib's template before the landmarks count as implausible. Measured: AT&T faces median 0.010,
maximum 0.032; real faces in face-api's sample photos at most 0.027; Haar's false detections
there 0.034 to 0.42."""

EYE_SPAN = (0.30, 0.65)
"""Plausible distance between the two eye centres as a fraction of the detector's box width.
Measured: AT&T faces 0.35 to 0.49 in Haar boxes and 0.35 to 0.52 in SSD boxes, real faces in
the sample photos 0.32 to 0.42, Haar's false detections there 0.06 to 0.28."""

MAX_ROLL_DEGREES = 40.0
"""Upright faces (AT&T: fitted roll at most 14 degrees) are what both detectors find and the
landmark net was trained on; a steeper fitted roll means the landmarks, not the face, are off."""


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
    """``crop`` of the RGB ``image`` as the net's ``(112, 112, 3)`` float32 input: face-api's
    ``padToSquare`` (zeros, the larger half after the face), then its ``resizeBilinear``."""
    return square_resize(image, crop, LANDMARK_INPUT_SIZE, centred=True)


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
        self._net = ServedNet(
            self.model_dir, what="landmark model", size=LANDMARK_INPUT_SIZE, outputs=[OUTPUT_NAME]
        )

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """The raw net: ``(N, 112, 112, 3)`` float32 -> ``(N, 136)`` float32."""
        out = np.empty((len(inputs), 136), dtype=np.float32)
        for start in range(0, len(inputs), self.batch_size):
            batch = inputs[start : start + self.batch_size]
            out[start : start + len(batch)] = self._net(batch)[OUTPUT_NAME]
        return out

    def locate(self, image: np.ndarray, regions: Sequence[FloatBox]) -> list[np.ndarray | None]:
        """``(68, 2)`` image-pixel landmarks per face region of the RGB ``image``, in one batch.

        ``regions`` are what the net is fed (:meth:`Detection.landmark_region`). A region with
        nothing inside the image gets None.
        """
        height, width = image.shape[:2]
        crops = [face_crop(region, height, width) for region in regions]
        usable = [c for c in crops if c is not None]
        if not usable:
            return [None] * len(crops)
        outputs = iter(self.predict(np.stack([net_input(image, c) for c in usable])))
        return [None if c is None else points_from_output(next(outputs), c) for c in crops]


def landmark_chip(points: np.ndarray) -> LandmarkChip:
    """dlib's ``get_face_chip_details(shape68, 150, 0.25)`` for 68 landmarks, as a transform.

    dlib fits ``image ~ a * template + b`` (complex numbers: rotation and scale ``a``) by least
    squares, then extracts the chip from a rectangle of ``size * |a|`` centred on the
    template's centre, with chip pixels ``0`` and ``size - 1`` on its edges. The inverse of
    that mapping is returned as image -> chip pixels; the fit of dlib's five points (fit error,
    roll, eye span) comes with it, for :func:`plausible`. Raises ValueError when the points are
    not finite or span less than a pixel of chip (no transform exists).
    """
    points = np.asarray(points, np.float64)
    chip_points = list(DLIB_CHIP_POINTS)
    transform = fitted_chip_transform(
        DLIB_MEAN_FACE[[i - 17 for i in chip_points]], points[chip_points]
    )
    five = points[list(DLIB_FIVE_FROM_68)]
    a5, b5 = _similarity_fit(DLIB_FIVE_TEMPLATE, five)
    target = five[:, 0] + 1j * five[:, 1]
    source = _chip_points(DLIB_FIVE_TEMPLATE)
    fitted = (target - b5) / a5
    eyes = target[[0, 1]].mean() - target[[2, 3]].mean()
    return LandmarkChip(
        transform=transform,
        fit_error=float(np.sqrt(np.mean(np.abs(fitted - source) ** 2)) / DLIB_CHIP_SIZE),
        roll_degrees=math.degrees(float(np.angle(a5))),
        eye_span=float(abs(eyes)),
    )


def fitted_chip_transform(template: np.ndarray, points: np.ndarray) -> np.ndarray:
    """dlib's ``chip_details(template, points, 150)`` with its 0.25 padding, as the 2x3 image
    -> chip matrix: ``template`` holds unit-square face points, ``points`` the image pixels of
    the same points. ValueError when no chip-sized transform exists."""
    size = DLIB_CHIP_SIZE
    a, b = _similarity_fit(template, points)
    centre = a * complex(size / 2, size / 2) + b
    stretch = (size * abs(a) - 1) / (size - 1)
    # image z = centre + rotation * stretch * (u - (size - 1)/2 * (1 + i)) for chip pixel u
    to_image = a / abs(a) * stretch
    inverse = 1 / to_image
    offset = (size - 1) / 2 * (1 + 1j) - inverse * centre
    return np.array(
        [[inverse.real, -inverse.imag, offset.real], [inverse.imag, inverse.real, offset.imag]]
    )


def _chip_points(template: np.ndarray) -> np.ndarray:
    """Unit-square template points as complex chip pixels, dlib's padding added."""
    padded = (DLIB_CHIP_PADDING + template) / (2 * DLIB_CHIP_PADDING + 1) * DLIB_CHIP_SIZE
    return padded[:, 0] + 1j * padded[:, 1]


def _similarity_fit(template: np.ndarray, points: np.ndarray) -> tuple[complex, complex]:
    """``a``, ``b`` of the least-squares ``points ~ a * chip(template) + b`` (dlib's
    ``find_similarity_transform``); ValueError when no chip-sized transform exists."""
    source = _chip_points(template)
    target = points[:, 0] + 1j * points[:, 1]
    centred = source - source.mean()
    a = complex(np.vdot(centred, target - target.mean()) / np.vdot(centred, centred).real)
    if not np.isfinite(a) or DLIB_CHIP_SIZE * abs(a) <= 1:
        raise ValueError("the landmarks do not span a face chip")
    return a, complex(target.mean() - a * source.mean())


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
