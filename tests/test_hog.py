"""dlib's HOG detector as the SSD's second opinion (:mod:`facerank.faces.hog`): boxes mapped to
where the SSD puts its box on the same face, faces scikit-image ships, no face where it has none."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skdata

from facerank.faces.hog import HogFaceDetector
from tests.plugins.faces import ASTRONAUT_FACE_BOX, iou

FACELESS = ("camera", "coffee", "chelsea", "rocket", "immunohistochemistry", "brick", "gravel")
"""scikit-image photos without a human face (a man seen from behind his camera, a cat, ...)."""


def rgb(name: str) -> np.ndarray:
    image = getattr(skdata, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def test_the_astronauts_face_is_found_where_the_ssd_would_box_it(astronaut: np.ndarray) -> None:
    [face] = HogFaceDetector().detect(astronaut)
    assert face.detector == "hog"
    assert face.confidence > 1.0
    assert face.region is not None
    assert iou(face.box, ASTRONAUT_FACE_BOX) > 0.6
    # SSD boxes are taller than wide and reach below the chin; so is the mapped HOG square
    assert face.box[3] > face.box[2]


@pytest.mark.parametrize("name", FACELESS)
def test_photos_without_a_face_give_none(name: str) -> None:
    assert HogFaceDetector().detect(rgb(name)) == []


def test_a_large_photo_is_searched_shrunk_and_boxed_in_its_own_pixels(
    astronaut: np.ndarray,
) -> None:
    """Three times the astronaut: searched at 640 px, the box comes back in full-size pixels."""
    large = np.ascontiguousarray(np.repeat(np.repeat(astronaut, 3, axis=0), 3, axis=1))
    [face] = HogFaceDetector().detect(large)
    scaled = tuple(v * 3 for v in ASTRONAUT_FACE_BOX)
    assert iou(face.box, scaled) > 0.6


def test_size_and_count_limits_apply(astronaut: np.ndarray) -> None:
    assert HogFaceDetector(min_face_size=200).detect(astronaut) == []
    with pytest.raises(ValueError, match="invalid detector parameters"):
        HogFaceDetector(max_faces=0)
    with pytest.raises(ValueError, match="expected an"):
        HogFaceDetector().detect(astronaut[..., 0])
