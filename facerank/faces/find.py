"""Every face of a photo with its landmarks: detection, landmark location and rescue in one place.

Why one place: enrollment, identification, the predictor, ``facerank detect`` and the
evaluation must see the same faces, or the evaluation would measure a pipeline nobody runs.

A rescue: when the detector finds no face at its threshold, a detector that can also report
*unsure* faces (:class:`UnsureFaces`, the SSD's boxes scoring between its floor and its
threshold) offers them, and the landmark net verifies each: only a box whose landmarks fit
dlib's mean face (:func:`~facerank.faces.landmarks.plausible`) counts as a face. LFW View 1:
the SSD finds no face in 25 of 4,991 photos at 0.5; 9 of them hold a face scoring 0.2 to 0.5
whose landmarks fit, while the faceless photos of scikit-image offer at most one candidate,
which the landmarks refuse.

A second opinion: when nothing is rescued either, a detector that has one
(:class:`SecondOpinion`: the SSD asks dlib's HOG detector, :mod:`facerank.faces.hog`) reports
what that other detector finds. On LFW View 1 it finds the faces of the photos the rescue
leaves without one (a full white beard, a head turned down), and it finds none in
scikit-image's faceless photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from facerank.faces.detect import Detection, FaceDetector
from facerank.faces.landmarks import LandmarkLocator, plausible_chip


@runtime_checkable
class UnsureFaces(Protocol):
    """A detector that can list the faces it would keep at a lower threshold."""

    def unsure(self, image: np.ndarray) -> list[Detection]:
        """Faces scoring below the detector's threshold but above its floor, largest first."""
        ...


@runtime_checkable
class SecondOpinion(Protocol):
    """A detector that can ask another detector when it finds no face itself."""

    def second_opinion(self, image: np.ndarray) -> list[Detection]:
        """The other detector's faces, largest first (none when it has no other)."""
        ...


@dataclass(frozen=True)
class FoundFace:
    detection: Detection
    landmarks: np.ndarray | None
    """``(68, 2)`` image pixels, or None without a locator (or nothing of the box in view)."""


def find_faces(
    pixels: np.ndarray, detector: FaceDetector, locator: LandmarkLocator | None
) -> list[FoundFace]:
    """Every face ``detector`` finds in the RGB ``pixels`` (largest first), with landmarks when
    ``locator`` is given, all located in one batch. When it finds none: its unsure faces that
    the landmarks verify, else its second opinion's faces."""
    detections = detector.detect(pixels)
    if not detections:
        if locator is not None and isinstance(detector, UnsureFaces):
            rescued = _rescue(pixels, detector.unsure(pixels), locator)
            if rescued:
                return rescued
        if isinstance(detector, SecondOpinion):
            detections = detector.second_opinion(pixels)
    if locator is None:
        return [FoundFace(d, None) for d in detections]
    points = locator.locate(pixels, [d.landmark_region() for d in detections])
    return [FoundFace(d, p) for d, p in zip(detections, points, strict=True)]


def _rescue(
    pixels: np.ndarray, candidates: list[Detection], locator: LandmarkLocator
) -> list[FoundFace]:
    """The ``candidates`` whose landmarks look like a face in their box."""
    if not candidates:
        return []
    points = locator.locate(pixels, [d.landmark_region() for d in candidates])
    return [
        FoundFace(d, p)
        for d, p in zip(candidates, points, strict=True)
        if p is not None and plausible_chip(p, d.box) is not None
    ]
