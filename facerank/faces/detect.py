"""Face detection behind a small interface, and OpenCV's Haar cascades as one detector.

Why Haar stays: it ships inside ``opencv-python-headless`` (no weights to download), runs in
about 50 ms on a 640x480 photo on one core, and is deterministic, so it is the fallback when
the default detector, face-api's SSD (:mod:`facerank.faces.ssd`), is not set up. Detectors draw
their boxes differently (SSD's are larger and sit lower on the face), so every
:class:`Detection` names its detector, and what depends on where a box sits on a face (the
region the landmark net is fed, the eye positions of the box alignment fallback) is that
detector's :class:`BoxGeometry`, not a global.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

Point = tuple[float, float]
Box = tuple[int, int, int, int]
FloatBox = tuple[float, float, float, float]
DetectorName = Literal["ssd", "haar", "hog"]

_CASCADE_DIR = Path(cv2.data.haarcascades)
FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"

# Eye search: the face ROI is resized to this width so eye detection costs the same for any
# face size (and is deterministic), and only its upper part is searched.
_EYE_ROI_WIDTH = 128
_EYE_ROI_TOP_FRACTION = 0.6


@dataclass(frozen=True)
class BoxGeometry:
    """How one detector's boxes sit on a face, as fractions of the box.

    ``landmark_scale``: the landmark net sees the box grown by this factor about its centre
    (face-api trained it on its SSD's boxes, so those go in as they are). ``left_eye`` /
    ``right_eye``: where the eye centres usually sit in the box (left and right in the image),
    used to align on the box when neither landmarks nor eyes are usable.
    ``verify_landmarks``: whether the landmarks in this detector's boxes must look like a face
    (:func:`~facerank.faces.landmarks.plausible`) before the chip follows them.
    """

    landmark_scale: float
    left_eye: Point
    right_eye: Point
    verify_landmarks: bool


HAAR_BOXES = BoxGeometry(
    landmark_scale=1.15, left_eye=(0.266, 0.380), right_eye=(0.715, 0.380), verify_landmarks=True
)
"""Haar boxes are tight, and some hold no face: the landmark net answers anyway, so its points
are verified. Eyes: the median over 248 AT&T faces where the eye cascade found
exactly one eye on each side. Landmark scale: SSD boxes' longer side (the one ``padToSquare``
keeps) measured 1.12 (face-api's sample photos) to 1.20 (AT&T faces) times the Haar box's;
from 1.15 to 1.25 the landmarks move least when the box jitters by 5% (1.2% of the eye
distance, against 1.5% on the bare Haar box)."""

SSD_BOXES = BoxGeometry(
    landmark_scale=1.0, left_eye=(0.294, 0.380), right_eye=(0.736, 0.380), verify_landmarks=False
)
"""SSD boxes go to the landmark net unchanged, as face-api feeds them, and the chip always
follows the landmarks: at the SSD's threshold a box holds a face, and the verification, tuned
to refuse Haar's false detections, sent 117 of the 4,966 LFW View 1 faces it was first
measured on (turned heads, fit errors up to 0.09) to the box's fixed eye positions, which
costs DevTest 1.4 points (``bench/results/lfw-alignment-ablation.json``,
``dlib68-verified``). Eyes: the median eye centres of plausible landmarks in the SSD boxes of
AT&T's 400 faces (``bench/survey_detectors.py``: x 0.294 and 0.736, heights 0.376 and 0.384,
averaged so a box-aligned chip is not rolled)."""

HOG_BOXES = SSD_BOXES
"""dlib's HOG boxes are reported where the SSD would put its box on the same face
(:data:`~facerank.faces.hog.SSD_FROM_HOG`), so the SSD's geometry holds for them, unverified
landmarks included: HOG's precision is high, and on LFW the one HOG face whose landmarks fail
the fit (a turned head) still matches its other photo at 0.35, well inside the threshold."""

BOX_GEOMETRY: dict[str, BoxGeometry] = {"haar": HAAR_BOXES, "ssd": SSD_BOXES, "hog": HOG_BOXES}


@dataclass(frozen=True)
class Detection:
    """One face: its box in image pixels, a detector score, the eyes if they were found, and
    which detector found it."""

    box: Box
    """``(x, y, w, h)`` in pixels of the original image."""

    confidence: float
    """The detector's score: it orders detections and separates weak from strong ones; it is
    not a calibrated probability, and scales differ between detectors."""

    eyes: tuple[Point, Point] | None = None
    """Eye centres ``(left-in-image, right-in-image)`` in image pixels, or ``None``."""

    detector: DetectorName = "haar"
    """The detector that found the face; its :class:`BoxGeometry` applies to :attr:`box`."""

    region: FloatBox | None = None
    """The detector's own sub-pixel box ``(x, y, w, h)`` when it has one (SSD), else None."""

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    @property
    def geometry(self) -> BoxGeometry:
        return BOX_GEOMETRY[self.detector]

    def landmark_region(self) -> FloatBox:
        """What the landmark net is fed: the box grown by its detector's ``landmark_scale``."""
        x, y, w, h = self.region or self.box
        scale = self.geometry.landmark_scale
        grow = (scale - 1) / 2
        return x - grow * w, y - grow * h, w * scale, h * scale

    def box_eyes(self) -> tuple[Point, Point]:
        """The eye centres a face in this box usually has, in image pixels."""
        x, y, w, h = self.box
        (lx, ly), (rx, ry) = self.geometry.left_eye, self.geometry.right_eye
        return (x + lx * w, y + ly * h), (x + rx * w, y + ry * h)


def pixel_box(region: FloatBox, width: int, height: int) -> Box:
    """Whole pixels covering the rounded edges of the sub-pixel ``region``, inside the image."""
    x, y, w, h = region
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(width, round(x + w)), min(height, round(y + h))
    return left, top, max(0, right - left), max(0, bottom - top)


def largest_first(
    detections: list[Detection], min_face_size: int, max_faces: int
) -> list[Detection]:
    """The ``detections`` at least ``min_face_size`` pixels on their shorter side, largest
    first, at most ``max_faces``; ties are broken by position, so the order never depends on
    the detector's scores."""
    kept = [d for d in detections if min(d.box[2:]) >= min_face_size]
    kept.sort(key=lambda d: (-d.area, d.box[1], d.box[0]))
    return kept[:max_faces]


FRAME_PAD = 0.15
"""Border added, as a fraction of the shorter side, when a first search found no face: AT&T's
92x112 portraits, whose faces fill the frame, go from 88% found to all of them."""


class FaceDetector(Protocol):
    """Finds faces in an RGB image; results sorted by size, largest first."""

    def detect(self, image: np.ndarray) -> list[Detection]: ...


HAAR_MIN_CONFIDENCE = 0.8
"""On AT&T faces 99% of Haar's scores are above 0.9, while most of its false positives on
skimage's non-face photos score below 0.8."""


class HaarFaceDetector:
    """Frontal-face Haar cascade plus an eye cascade inside each face for alignment.

    Confidence: the logistic of the cascade's final-stage margin (``levelWeights``).

    ``max_detect_side`` bounds the cost on large photos: the image is shrunk so its longer side
    is at most that many pixels before the face search (boxes are mapped back), which keeps a
    12-megapixel phone photo near the cost of a 1-megapixel one. ``min_confidence`` drops weak
    detections (:data:`HAAR_MIN_CONFIDENCE`). Cascades are loaded once per
    thread because ``CascadeClassifier`` is not safe to share between threads.
    """

    def __init__(
        self,
        *,
        min_face_size: int = 40,
        max_faces: int = 20,
        min_confidence: float = HAAR_MIN_CONFIDENCE,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        find_eyes: bool = True,
        max_detect_side: int = 1024,
    ) -> None:
        if min_face_size < 1 or max_faces < 1 or scale_factor <= 1.0 or max_detect_side < 64:
            raise ValueError("invalid detector parameters")
        self.min_face_size = min_face_size
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.find_eyes = find_eyes
        self.max_detect_side = max_detect_side
        self._local = threading.local()

    def detect(self, image: np.ndarray) -> list[Detection]:
        gray = _to_gray(image)
        scale = min(1.0, self.max_detect_side / max(gray.shape))
        small = gray if scale == 1.0 else _resize(gray, scale)
        min_side = max(24, round(self.min_face_size * scale))
        if min(small.shape) < min_side:
            return []
        boxes = self._search(small, min_side, scale, gray.shape, pad=0)
        if not boxes:
            # A face filling the frame (a portrait crop, an ID photo) leaves the cascade's
            # window no margin around it: search again with the border repeated around.
            pad = round(FRAME_PAD * min(small.shape))
            boxes = self._search(small, min_side, scale, gray.shape, pad=pad)
        boxes = [
            (b, w)
            for b, w in boxes
            if min(b[2], b[3]) >= self.min_face_size and _logistic(w) >= self.min_confidence
        ]
        # Largest first; ties broken by position so the order never depends on OpenCV's.
        boxes.sort(key=lambda bw: (-bw[0][2] * bw[0][3], bw[0][1], bw[0][0]))
        return [
            Detection(
                box=box,
                confidence=_logistic(weight),
                eyes=self._find_eyes(gray, box) if self.find_eyes else None,
                detector="haar",
            )
            for box, weight in boxes[: self.max_faces]
        ]

    def _search(
        self, small: np.ndarray, min_side: int, scale: float, shape: tuple[int, ...], *, pad: int
    ) -> list[tuple[Box, float]]:
        """Cascade boxes of ``small`` (with ``pad`` repeated border pixels around it), mapped
        to the original image and clipped to it, with their level weights."""
        searched = small
        if pad:
            searched = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        rects, _levels, weights = self._cascade(FACE_CASCADE).detectMultiScale3(
            cv2.equalizeHist(searched),
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
            outputRejectLevels=True,
        )
        boxes = []
        for r, w in zip(rects, np.ravel(weights), strict=True):
            x, y, width, height = (int(v) for v in r)
            left, top = max(0, x - pad), max(0, y - pad)
            right = min(small.shape[1], x - pad + width)
            bottom = min(small.shape[0], y - pad + height)
            if right > left and bottom > top:
                box = (left, top, right - left, bottom - top)
                boxes.append((_rescale_box(box, scale, shape), float(w)))
        return boxes

    def _find_eyes(self, gray: np.ndarray, box: Box) -> tuple[Point, Point] | None:
        x, y, w, h = box
        zoom = _EYE_ROI_WIDTH / w
        roi = cv2.resize(
            gray[y : y + h, x : x + w],
            (_EYE_ROI_WIDTH, round(h * zoom)),
            interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR,
        )
        top = cv2.equalizeHist(roi[: round(roi.shape[0] * _EYE_ROI_TOP_FRACTION)])
        found = self._cascade(EYE_CASCADE).detectMultiScale(
            top,
            scaleFactor=1.1,
            minNeighbors=3,
            minSize=(_EYE_ROI_WIDTH // 8, _EYE_ROI_WIDTH // 8),
            maxSize=(_EYE_ROI_WIDTH // 2, _EYE_ROI_WIDTH // 2),
        )
        centres = [
            (float(ex + ew / 2) / _EYE_ROI_WIDTH, float(ey + eh / 2) / (h * zoom))
            for ex, ey, ew, eh in found
        ]
        pair = pick_eye_pair(centres)
        if pair is None:
            return None
        (lx, ly), (rx, ry) = pair
        return (x + lx * w, y + ly * h), (x + rx * w, y + ry * h)

    def _cascade(self, name: str) -> cv2.CascadeClassifier:
        cache: dict[str, cv2.CascadeClassifier] = self._local.__dict__.setdefault("cascades", {})
        if name not in cache:
            classifier = cv2.CascadeClassifier(str(_CASCADE_DIR / name))
            if classifier.empty():
                raise RuntimeError(f"OpenCV cascade {name} missing from {_CASCADE_DIR}")
            cache[name] = classifier
        return cache[name]


def pick_eye_pair(centres: list[Point]) -> tuple[Point, Point] | None:
    """Choose the plausible (left, right) pair closest to the calibrated positions, or None.

    Centres are fractions of the face box. The eye cascade fires on eyebrows, nostrils and
    glasses frames too, so a pair must straddle the box's middle, lie at a believable distance
    apart and tilt by less than 35 degrees; among those the pair nearest to where eyes usually
    sit wins.
    """
    left = [c for c in centres if c[0] < 0.5]
    right = [c for c in centres if c[0] >= 0.5]
    best: tuple[float, tuple[Point, Point]] | None = None
    for lc in left:
        for rc in right:
            dx, dy = rc[0] - lc[0], rc[1] - lc[1]
            if not 0.25 <= math.hypot(dx, dy) <= 0.7 or abs(math.degrees(math.atan2(dy, dx))) > 35:
                continue
            cost = math.dist(lc, HAAR_BOXES.left_eye) + math.dist(rc, HAAR_BOXES.right_eye)
            if best is None or cost < best[0]:
                best = (cost, (lc, rc))
    return None if best is None else best[1]


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an (H, W) or (H, W, 3) uint8 image, got shape {image.shape}")


def _resize(gray: np.ndarray, scale: float) -> np.ndarray:
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def _rescale_box(box: Box, scale: float, shape: tuple[int, ...]) -> Box:
    """Map a box found on the shrunk image back to original pixels, clipped to the image."""
    x, y, w, h = (round(v / scale) for v in box)
    x, y = max(0, x), max(0, y)
    return x, y, min(w, shape[1] - x), min(h, shape[0] - y)


def _logistic(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))
