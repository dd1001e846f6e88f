"""Face detection with face-api's SSD MobileNet v1 (the default detector).

The network is ported by :mod:`facerank.descriptor.ssd` and exported by ``facerank models
fetch``; everything around it is face-api's ``SsdMobilenetv1.locateFaces``, step for step: the
photo is zero-padded at the bottom or right to a square and resized to 512 px with TF's legacy
bilinear sampling (``toBatchTensor(512, false)``); the network scores 5,118 anchor boxes;
greedy non-maximum suppression keeps boxes scoring above the threshold that overlap no better
box by more than an IoU of 0.5; the survivors, clipped to the padded square, are scaled back to
the photo by the ratio of the square to the photo's resized size.

What facerank adds: a photo where this finds no face is searched again zoomed out, inside a
black margin (:data:`ZOOM_OUT_MARGINS`), because the SSD, trained on WIDER FACE's crowds, misses
a face that fills the whole frame (a passport photo, an AT&T face); faces smaller than
``min_face_size`` are dropped, the rest sorted largest first and cut to ``max_faces``; every
:class:`Detection` says ``detector="ssd"`` and keeps the sub-pixel box the landmark net is fed.
TensorFlow is imported only when the first photo is detected.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from facerank.faces.detect import Detection, FaceDetector, FloatBox, largest_first, pixel_box
from facerank.faces.netserve import ServedNet
from facerank.imaging.resize import square_resize

SSD_MODEL_NAME = "ssd-mobilenetv1-v1"
"""Folder name of the exported detector under ``cache_dir/models``."""

SSD_INPUT_SIZE = 512
ANCHORS = 5118
BOXES_NAME = "boxes"
SCORES_NAME = "scores"
"""The SavedModel's interface: ``images`` (N, 512, 512, 3) float32 0..255 -> ``boxes`` (N,
5118, 4) ``ymin, xmin, ymax, xmax`` fractions of the input, ``scores`` (N, 5118)."""

IOU_THRESHOLD = 0.5
MAX_RESULTS = 100
"""face-api's NMS: a box overlapping a better one by more than this IoU is dropped; at most
this many boxes survive (``SsdMobilenetv1Options``' default)."""

ZOOM_OUT_MARGINS = (0.5, 0.75)
"""Margins, as fractions of the photo's longer side on every side, of the searches after one
finds no face. AT&T's 92x112 close-ups: 10 of 400 faces found without a margin, 395 with 0.5,
399 with 0.75 alone, all 400 with 0.5 then 0.75 (``bench/survey_detectors.py``). A photo with
a face costs one search; one without, three."""

SSD_MIN_CONFIDENCE = 0.5
"""Score threshold when ``FACERANK_MIN_FACE_CONFIDENCE`` is not set: face-api's default.
Measured (``bench/survey_detectors.py``): every AT&T face scores above it (lowest 0.505, 1st
percentile 0.54); scikit-image's photos without a face at most 0.36 (``coins``; its cat's face
scores 0.93, a face to this detector at any threshold); face-api's group photos: every face
above it and nothing else."""

SSD_UNSURE_CONFIDENCE = 0.2
"""The floor of :meth:`SsdFaceDetector.unsure`: boxes scoring from here up to the threshold are
offered for the landmark net to verify (:mod:`facerank.faces.find`) when nothing scores above
the threshold. LFW View 1's 25 photos without a face at 0.5: 9 faces whose landmarks fit score
0.2 to 0.5 (``bench/results/lfw-alignment-ablation.json``, ``rescued``); scikit-image's faceless
photos score below 0.2 (``coins``: 0.16)."""


def ssd_input(image: np.ndarray) -> np.ndarray:
    """The RGB ``image`` as the network's ``(512, 512, 3)`` float32 input (zeros appended)."""
    height, width = image.shape[:2]
    return square_resize(image, (0, 0, width, height), SSD_INPUT_SIZE, centred=False)


def non_max_suppression(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    max_output: int = MAX_RESULTS,
    iou_threshold: float = IOU_THRESHOLD,
    score_threshold: float,
) -> list[int]:
    """face-api's ``nonMaxSuppression``: indices of the kept boxes, best score first.

    Candidates score strictly above ``score_threshold``, are visited best first (ties in index
    order, as JavaScript's stable sort), and are kept unless a kept box overlaps them by more
    than ``iou_threshold``.
    """
    candidates = np.flatnonzero(scores > score_threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    limit = min(max_output, len(boxes))
    corners = np.asarray(boxes, np.float64)
    low = np.minimum(corners[:, :2], corners[:, 2:])
    high = np.maximum(corners[:, :2], corners[:, 2:])
    areas = np.prod(high - low, axis=1)
    selected: list[int] = []
    for index in order:
        if len(selected) >= limit:
            break
        if not selected:
            selected.append(int(index))
            continue
        kept = np.array(selected)
        overlap = np.clip(
            np.minimum(high[kept], high[index]) - np.maximum(low[kept], low[index]), 0.0, None
        )
        intersection = np.prod(overlap, axis=1)
        union = areas[kept] + areas[index] - intersection
        valid = (areas[kept] > 0) & (areas[index] > 0)
        iou = np.where(valid, intersection / np.where(valid, union, 1.0), 0.0)
        if not np.any(iou > iou_threshold):
            selected.append(int(index))
    return selected


def image_box(box: np.ndarray, width: int, height: int) -> FloatBox:
    """An output box (fractions of the padded square) -> ``(x, y, w, h)`` in image pixels.

    face-api clips the box to the square, scales it by ``512 / resized side`` (the image's
    sides resized to 512 on the longer one, rounded) and then by the image's size.
    """
    scale = SSD_INPUT_SIZE / max(width, height)
    pad_x = SSD_INPUT_SIZE / _js_round(width * scale)
    pad_y = SSD_INPUT_SIZE / _js_round(height * scale)
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    top, bottom = max(0.0, ymin) * pad_y, min(1.0, ymax) * pad_y
    left, right = max(0.0, xmin) * pad_x, min(1.0, xmax) * pad_x
    return left * width, top * height, (right - left) * width, (bottom - top) * height


def _js_round(value: float) -> int:
    """JavaScript's ``Math.round``: halves go up."""
    return math.floor(value + 0.5)


class SsdFaceDetector:
    """The :class:`~facerank.faces.detect.FaceDetector` over the exported SSD at ``model_dir``.

    ``zoom_out``: margins of the searches after one finds no face (``()``: face-api's
    ``locateFaces`` exactly). ``unsure_floor``: the lowest score :meth:`unsure` offers (None:
    it offers nothing, as when a user set the threshold and it is to be taken literally).
    ``fallback``: the detector :meth:`second_opinion` asks (None: none, for the same reason).
    Thread-safe: the model is loaded once, on first use, and its
    signature may be called from many threads at once.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        min_face_size: int = 40,
        max_faces: int = 20,
        min_confidence: float = SSD_MIN_CONFIDENCE,
        zoom_out: tuple[float, ...] = ZOOM_OUT_MARGINS,
        unsure_floor: float | None = SSD_UNSURE_CONFIDENCE,
        fallback: FaceDetector | None = None,
    ) -> None:
        if min_face_size < 1 or max_faces < 1 or not 0.0 <= min_confidence < 1.0:
            raise ValueError("invalid detector parameters")
        if any(margin <= 0 for margin in zoom_out):
            raise ValueError("zoom-out margins must be positive")
        self.min_face_size = min_face_size
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self.zoom_out = zoom_out
        self.unsure_floor = unsure_floor
        self.fallback = fallback
        self._net = ServedNet(
            model_dir,
            what="SSD face detector",
            size=SSD_INPUT_SIZE,
            outputs=[BOXES_NAME, SCORES_NAME],
        )

    def predict(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw network: ``(N, 512, 512, 3)`` -> boxes ``(N, 5118, 4)``, scores ``(N, 5118)``."""
        out = self._net(inputs)
        return out[BOXES_NAME], out[SCORES_NAME]

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Every face above the thresholds, largest first, at most ``max_faces``."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {image.shape}")
        found = self._locate(image)
        for margin in self.zoom_out:
            if found:
                break
            found = self._locate_zoomed_out(image, margin)
        return self._detections(image, found)

    def unsure(self, image: np.ndarray) -> list[Detection]:
        """The faces scoring from ``unsure_floor`` up to the threshold, largest first: what
        :func:`~facerank.faces.find.find_faces` asks for when :meth:`detect` found none, for
        the landmark net to verify."""
        if self.unsure_floor is None or self.unsure_floor >= self.min_confidence:
            return []
        found = self._locate(image, self.unsure_floor)
        return self._detections(image, [(r, s) for r, s in found if s < self.min_confidence])

    def second_opinion(self, image: np.ndarray) -> list[Detection]:
        """The ``fallback`` detector's faces: what :func:`~facerank.faces.find.find_faces` asks
        for when neither :meth:`detect` nor :meth:`unsure` gave it a face."""
        return self.fallback.detect(image) if self.fallback is not None else []

    def _detections(
        self, image: np.ndarray, found: list[tuple[FloatBox, float]]
    ) -> list[Detection]:
        """``found`` as detections at least ``min_face_size`` wide, largest first."""
        height, width = image.shape[:2]
        detections = [
            Detection(
                box=pixel_box(region, width, height),
                confidence=score,
                detector="ssd",
                region=region,
            )
            for region, score in found
        ]
        return largest_first(detections, self.min_face_size, self.max_faces)

    def _locate(
        self, image: np.ndarray, threshold: float | None = None
    ) -> list[tuple[FloatBox, float]]:
        """face-api's ``locateFaces``: kept boxes in ``image``'s pixels, with their scores
        (above ``threshold``, by default the detector's own)."""
        height, width = image.shape[:2]
        boxes, scores = self.predict(ssd_input(image)[None])
        floor = self.min_confidence if threshold is None else threshold
        kept = non_max_suppression(boxes[0], scores[0], score_threshold=floor)
        return [(image_box(boxes[0][i], width, height), float(scores[0][i])) for i in kept]

    def _locate_zoomed_out(self, image: np.ndarray, margin: float) -> list[tuple[FloatBox, float]]:
        """:meth:`_locate` on ``image`` inside a black border of ``margin`` times its longer
        side, shrunk first so the canvas is no larger than the network's input."""
        height, width = image.shape[:2]
        shrink = min(1.0, SSD_INPUT_SIZE / (max(height, width) * (1 + 2 * margin)))
        small = image
        if shrink < 1.0:
            size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        border = round(margin * max(small.shape[:2]))
        canvas = cv2.copyMakeBorder(small, *[border] * 4, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        sx, sy = small.shape[1] / width, small.shape[0] / height
        return [
            (((x - border) / sx, (y - border) / sy, w / sx, h / sy), score)
            for (x, y, w, h), score in self._locate(canvas)
        ]
