"""dlib's HOG frontal-face detector: the second opinion when the SSD finds no face.

Why a second detector: on LFW View 1 the SSD finds no face in 25 of 4,991 photos at its
threshold; the rescue of its unsure boxes (:mod:`facerank.faces.find`) recovers 9, and dlib's
HOG detector, trained on other data with other features, finds a face in the others that hold
one (a full white beard, a face turned down). It ships compiled into dlib (the ``dlib-bin``
wheel: no weights to fetch), and it only runs on photos where the SSD found nothing, so it
costs nothing on the rest.

Its boxes are squares that sit higher and tighter on a face than the SSD's; the landmark net
was trained on SSD boxes, so each HOG box is mapped to where the SSD puts its box on the same
face (:data:`SSD_FROM_HOG`) and reported that way: a HOG face looks to the rest of the
pipeline like an SSD face, ``detector="hog"`` saying who found it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from facerank.faces.detect import Detection, FloatBox, largest_first, pixel_box


@dataclass(frozen=True)
class BoxMap:
    """Where the SSD's box sits on a face, relative to a HOG square of side ``s``: its centre
    moved by ``(dx * s, dy * s)``, its size ``(width * s, height * s)``."""

    dx: float
    dy: float
    width: float
    height: float


SSD_FROM_HOG = BoxMap(dx=-0.023, dy=-0.057, width=0.968, height=1.144)
"""Medians over the 3,396 LFW DevTrain faces both detectors found (HOG box matched to the
SSD's largest by IoU above 0.3); the middle 80% of each lies within 0.13 of a side."""

HOG_MAX_SIDE = 640
"""Photos are shrunk to this longer side before the search, which then runs on one doubled
pyramid level (faces down to about 40 px of the shrunk photo): the second opinion stays
under a second on a 12-megapixel photo."""

HOG_MIN_SCORE = 0.5
"""Above dlib's own threshold (0), because a second opinion must be sure: its faces' landmarks
are not verified. The LFW faces only HOG finds score 0.97 and 1.47, 95 % of the faces HOG
finds in LFW score above 0.63, and its one detection on scikit-image's astronaut besides her
face (on her suit) scores 0.12."""


class HogFaceDetector:
    """dlib's ``get_frontal_face_detector``, with boxes mapped to the SSD's convention.

    Confidence: dlib's SVM score (0 at its threshold, not a probability). The detector object
    is built once per thread: dlib does not document it as safe to share between threads.
    """

    def __init__(self, *, min_face_size: int = 40, max_faces: int = 20) -> None:
        if min_face_size < 1 or max_faces < 1:
            raise ValueError("invalid detector parameters")
        self.min_face_size = min_face_size
        self.max_faces = max_faces
        self._local = threading.local()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Every face HOG finds, largest first, at most ``max_faces``."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {image.shape}")
        height, width = image.shape[:2]
        scale = min(1.0, HOG_MAX_SIDE / max(height, width))
        searched = image
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            searched = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._detector().run(np.ascontiguousarray(searched), 1, HOG_MIN_SCORE)
        regions = [_ssd_region(rect, scale) for rect in rects]
        detections = [
            Detection(
                box=pixel_box(region, width, height),
                confidence=float(score),
                detector="hog",
                region=region,
            )
            for region, score in zip(regions, scores, strict=True)
        ]
        return largest_first(detections, self.min_face_size, self.max_faces)

    def _detector(self) -> object:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            import dlib  # dlib-bin: its import is cheap, but only faceless photos need it

            detector = self._local.detector = dlib.get_frontal_face_detector()
        return detector


def _ssd_region(rect: object, scale: float) -> FloatBox:
    """Where the SSD would box the face HOG found in ``rect`` (pixels of the shrunk photo)."""
    left, top = rect.left() / scale, rect.top() / scale  # type: ignore[attr-defined]
    side = (rect.right() - rect.left()) / scale  # type: ignore[attr-defined]
    cx = left + side / 2 + SSD_FROM_HOG.dx * side
    cy = top + side / 2 + SSD_FROM_HOG.dy * side
    w, h = SSD_FROM_HOG.width * side, SSD_FROM_HOG.height * side
    return cx - w / 2, cy - h / 2, w, h
