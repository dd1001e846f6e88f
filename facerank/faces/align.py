"""Face alignment: warp a detected face into the chip layout an embedder was trained on.

Embedders disagree on chip geometry (dlib's ResNet wants 150 px with the eyes high, ArcFace
style nets 112 px with more chin), so each embedder declares a :class:`ChipSpec` and alignment
serves it. The warp is a similarity transform (rotation, uniform scale, shift) that puts the two
eye centres exactly on the spec's canonical points; when no eyes were found it uses the
calibrated average eye positions inside the detector's box instead, which yields the same
layout without the rotation, and says so in the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from facerank.faces.detect import Detection, Point
from facerank.faces.landmarks import LandmarkChip, landmark_chip, plausible_chip

AlignMethod = Literal["landmarks", "eyes", "box"]
AlignMode = Literal["landmarks", "eyes", "box"]
"""``landmarks``: dlib's chip transform from 68 landmarks when they look like a face, else as
``eyes``. ``eyes``: use detected eyes when found, else the box. ``box``: always the box."""


@dataclass(frozen=True)
class ChipSpec:
    """Chip size and where the eye centres land in it, in chip pixels."""

    size: int
    left_eye: Point
    right_eye: Point

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"chip size too small: {self.size}")
        if not self.left_eye[0] < self.right_eye[0]:
            raise ValueError("left_eye must lie left of right_eye")
        for x, y in (self.left_eye, self.right_eye):
            if not (0 <= x < self.size and 0 <= y < self.size):
                raise ValueError(f"eye point ({x}, {y}) outside a {self.size}px chip")

    def to_json(self) -> dict[str, object]:
        return {
            "size": self.size,
            "left_eye": list(self.left_eye),
            "right_eye": list(self.right_eye),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ChipSpec:
        left, right = data["left_eye"], data["right_eye"]
        return cls(
            size=int(data["size"]),  # type: ignore[call-overload]
            left_eye=(float(left[0]), float(left[1])),  # type: ignore[index]
            right_eye=(float(right[0]), float(right[1])),  # type: ignore[index]
        )


# dlib's 150 px face chips (padding 0.25), the input of dlib's ResNet face descriptor.
DLIB_CHIP_150 = ChipSpec(150, (47.7, 47.1), (100.3, 47.1))
# The 112 px layout of ArcFace/InsightFace chips, eyes made level.
ARCFACE_CHIP_112 = ChipSpec(112, (38.29, 51.6), (73.53, 51.6))
# A 224 px VGGFace2-style loose crop (an MTCNN box plus a margin, not rotated upstream), as the
# HSE age/gender/identity MobileNets (faceres) were trained on. The eye distance (60 px) and
# height were chosen on LFW DevTrain among 56, 60, 74 and 88 px; the chip stays inside
# GALLERY_CROP_256's field, so stored crops re-embed without black borders.
VGGFACE2_CHIP_224 = ChipSpec(224, (82.0, 95.0), (142.0, 95.0))


# The gallery's stored crop: eyes 64 px apart, wide enough to hold the field of view of both
# layouts above (and any chip reaching 1.75 eye distances above the eyes, 2.25 below and 2 to
# each side), so a later model with another chip spec can be re-embedded from it.
GALLERY_CROP_256 = ChipSpec(256, (96.0, 112.0), (160.0, 112.0))


@dataclass(frozen=True)
class AlignedFace:
    chip: np.ndarray
    """``(size, size, 3)`` uint8 RGB."""

    method: AlignMethod
    """``landmarks`` if 68 landmarks drove the warp, ``eyes`` if detected eyes did, ``box`` if
    the calibrated box fallback did."""

    transform: np.ndarray
    """2x3 affine matrix from image pixels to chip pixels."""


def align_face(
    image: np.ndarray,
    detection: Detection,
    spec: ChipSpec,
    mode: AlignMode = "eyes",
    landmarks: np.ndarray | None = None,
) -> AlignedFace:
    """Warp ``detection``'s face in the RGB ``image`` into a chip laid out as ``spec`` says.

    ``landmarks`` (``(68, 2)`` image pixels, see :class:`~facerank.faces.landmarks.
    LandmarkLocator`) are used in mode ``landmarks`` only. Deterministic: the same image and
    detection always give the same chip. Large faces are halved with ``pyrDown`` until the
    warp shrinks by at most 2x, because a bilinear warp that shrinks more aliases (skipped
    pixels), which costs embedders accuracy.
    """
    matrix, method = chip_transform(detection, spec, mode, landmarks)
    return AlignedFace(
        chip=warp_chip(image, detection, matrix, spec), method=method, transform=matrix
    )


def warp_chip(
    image: np.ndarray, detection: Detection, matrix: np.ndarray, spec: ChipSpec
) -> np.ndarray:
    """``detection``'s face warped by the image -> chip ``matrix`` into a ``spec`` chip, large
    faces shrunk first (:func:`align_face`'s warp, for a transform found another way)."""
    source, source_matrix = _shrink_source(image, detection, matrix)
    return cv2.warpAffine(
        source,
        source_matrix,
        (spec.size, spec.size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def chip_transform(
    detection: Detection,
    spec: ChipSpec,
    mode: AlignMode = "eyes",
    landmarks: np.ndarray | None = None,
) -> tuple[np.ndarray, AlignMethod]:
    """The 2x3 image -> chip matrix :func:`align_face` warps with, and what drove it.

    Landmarks give dlib's 150 px chip transform; any other ``spec`` is reached from it through
    the similarity that moves ``DLIB_CHIP_150``'s eye points onto ``spec``'s, so every layout
    of one face (the embedder's chip, the gallery's crop) comes from the same fit and
    :func:`rechip` between layouts reproduces it. Landmarks that do not look like a face
    (:func:`~facerank.faces.landmarks.plausible`), in the boxes of a detector whose landmarks
    are verified, fall back to the eyes, then the box.
    """
    if mode == "landmarks" and landmarks is not None:
        fitted = _landmark_fit(landmarks, detection)
        if fitted is not None:
            dlib_eyes = (DLIB_CHIP_150.left_eye, DLIB_CHIP_150.right_eye)
            to_spec = similarity_transform(dlib_eyes, (spec.left_eye, spec.right_eye))
            return to_spec @ np.vstack([fitted.transform, (0.0, 0.0, 1.0)]), "landmarks"
    if mode != "box" and detection.eyes is not None:
        return similarity_transform(detection.eyes, (spec.left_eye, spec.right_eye)), "eyes"
    return similarity_transform(detection.box_eyes(), (spec.left_eye, spec.right_eye)), "box"


def _landmark_fit(landmarks: np.ndarray, detection: Detection) -> LandmarkChip | None:
    """dlib's chip of ``landmarks``, verified when ``detection``'s detector asks for it; None
    when refused or when the points span no chip."""
    if detection.geometry.verify_landmarks:
        return plausible_chip(landmarks, detection.box)
    try:
        return landmark_chip(landmarks)
    except ValueError:
        return None


def rechip(crop: np.ndarray, crop_spec: ChipSpec, spec: ChipSpec) -> np.ndarray:
    """Re-align a stored crop (laid out as ``crop_spec``) into another embedder's ``spec``."""
    size = crop_spec.size
    detection = Detection(
        box=(0, 0, size, size), confidence=1.0, eyes=(crop_spec.left_eye, crop_spec.right_eye)
    )
    return align_face(crop, detection, spec).chip


def similarity_transform(src: tuple[Point, Point], dst: tuple[Point, Point]) -> np.ndarray:
    """The 2x3 matrix of the rotation + uniform scale + shift mapping ``src`` pair onto ``dst``.

    Two point pairs fix a similarity exactly: in complex numbers ``z -> a*z + b`` with
    ``a = (d2 - d1) / (s2 - s1)`` and ``b = d1 - a*s1``.
    """
    s1, s2 = complex(*src[0]), complex(*src[1])
    d1, d2 = complex(*dst[0]), complex(*dst[1])
    if s1 == s2:
        raise ValueError("source points coincide")
    a = (d2 - d1) / (s2 - s1)
    b = d1 - a * s1
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], dtype=np.float64)


def _shrink_source(
    image: np.ndarray, detection: Detection, matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Crop around the face and ``pyrDown`` it until the warp's scale is at least 0.5.

    Returns the smaller source and the matrix adjusted to it. Cropping first (twice the box on
    every side, enough for any chip layout) keeps pyrDown's cost independent of photo size.
    """
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    if scale >= 0.5:
        return image, matrix
    x, y, w, h = detection.box
    x0, y0 = max(0, x - 2 * w), max(0, y - 2 * h)
    x1, y1 = min(image.shape[1], x + 3 * w), min(image.shape[0], y + 3 * h)
    source = image[y0:y1, x0:x1]
    matrix = matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    while scale < 0.5 and min(source.shape[:2]) >= 2:
        source = cv2.pyrDown(source)
        matrix[:, :2] *= 2.0
        scale *= 2.0
    return source, matrix
