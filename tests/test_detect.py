"""Haar face detection on real photos: boxes, ordering, limits, determinism."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerank.faces import HaarFaceDetector
from facerank.faces.detect import HAAR_BOXES, pick_eye_pair
from tests.plugins.faces import ASTRONAUT_FACE_BOX, iou, paste_faces

BOX_LEFT_EYE, BOX_RIGHT_EYE = HAAR_BOXES.left_eye, HAAR_BOXES.right_eye


def test_finds_the_astronaut_face_with_eyes(astronaut: np.ndarray) -> None:
    [face] = HaarFaceDetector().detect(astronaut)
    assert iou(face.box, ASTRONAUT_FACE_BOX) > 0.8
    assert face.confidence > 0.99
    assert face.eyes is not None
    (lx, ly), (rx, ry) = face.eyes
    x, y, w, h = face.box
    assert x < lx < x + w / 2 < rx < x + w
    assert y < ly < y + h / 2
    assert y < ry < y + h / 2


def test_box_maps_back_from_a_downscaled_search(astronaut: np.ndarray) -> None:
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    [face] = HaarFaceDetector(max_detect_side=512, min_face_size=160).detect(big)
    expected = tuple(v * 4 for v in ASTRONAUT_FACE_BOX)
    assert iou(face.box, expected) > 0.75


def test_faces_sorted_largest_first_and_capped(astronaut: np.ndarray) -> None:
    photo = paste_faces(astronaut, [0.8, 1.6, 1.2], canvas=(340, 760))
    faces = HaarFaceDetector().detect(photo)
    widths = [f.box[2] for f in faces]
    assert len(faces) == 3
    assert widths == sorted(widths, reverse=True)
    # Pasted left to right at scales 0.8, 1.6, 1.2: by size that is middle, right, left.
    xs = sorted(f.box[0] for f in faces)
    assert [f.box[0] for f in faces] == [xs[1], xs[2], xs[0]]
    assert HaarFaceDetector(max_faces=2).detect(photo) == faces[:2]


def test_min_face_size_drops_small_faces(astronaut: np.ndarray) -> None:
    photo = paste_faces(astronaut, [0.8, 1.6], canvas=(340, 520))
    small, large = sorted(f.box[2] for f in HaarFaceDetector().detect(photo))
    threshold = (small + large) // 2
    [face] = HaarFaceDetector(min_face_size=threshold).detect(photo)
    # Only the large face is left (its box may differ by a few pixels: the scale pyramid
    # starts at the new minimum size).
    assert face.box[2] >= threshold


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((480, 640, 3), np.uint8),
        np.full((480, 640, 3), 255, np.uint8),
        np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8),
        np.zeros((10, 10, 3), np.uint8),
    ],
    ids=["black", "white", "noise", "tiny"],
)
def test_no_face_means_an_empty_list(image: np.ndarray) -> None:
    assert HaarFaceDetector().detect(image) == []


def test_grayscale_input_is_accepted(astronaut: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    assert len(HaarFaceDetector().detect(gray)) == 1


def test_detection_is_deterministic(astronaut: np.ndarray) -> None:
    detector = HaarFaceDetector()
    assert detector.detect(astronaut.copy()) == HaarFaceDetector().detect(astronaut)


def test_eye_pair_prefers_plausible_positions() -> None:
    eyebrow_left, eye_left = (0.27, 0.25), BOX_LEFT_EYE
    nostril = (0.55, 0.62)
    assert pick_eye_pair([eyebrow_left, eye_left, BOX_RIGHT_EYE, nostril]) == (
        eye_left,
        BOX_RIGHT_EYE,
    )
    assert pick_eye_pair([BOX_LEFT_EYE]) is None
    assert pick_eye_pair([(0.1, 0.2), (0.9, 0.9)]) is None  # tilted 41 degrees


def test_rejects_images_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected"):
        HaarFaceDetector().detect(np.zeros((4, 4, 4), np.uint8))
