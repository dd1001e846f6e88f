"""Alignment: eyes land on the embedder's canonical points, box fallback, determinism."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerank.faces import (
    ARCFACE_CHIP_112,
    DLIB_CHIP_150,
    ChipSpec,
    Detection,
    HaarFaceDetector,
    align_face,
)
from facerank.faces.align import similarity_transform


def apply(matrix: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    return matrix @ np.array([point[0], point[1], 1.0])


@pytest.mark.parametrize("spec", [DLIB_CHIP_150, ARCFACE_CHIP_112], ids=["dlib150", "arcface112"])
def test_chip_has_the_declared_size_and_eye_layout(astronaut: np.ndarray, spec: ChipSpec) -> None:
    [face] = HaarFaceDetector().detect(astronaut)
    aligned = align_face(astronaut, face, spec)
    assert aligned.chip.shape == (spec.size, spec.size, 3)
    assert aligned.chip.dtype == np.uint8
    assert aligned.method == "eyes"
    assert face.eyes is not None
    np.testing.assert_allclose(apply(aligned.transform, face.eyes[0]), spec.left_eye, atol=1e-9)
    np.testing.assert_allclose(apply(aligned.transform, face.eyes[1]), spec.right_eye, atol=1e-9)


def test_falls_back_to_the_box_and_says_so(astronaut: np.ndarray) -> None:
    [face] = HaarFaceDetector(find_eyes=False).detect(astronaut)
    assert face.eyes is None
    aligned = align_face(astronaut, face, DLIB_CHIP_150)
    assert aligned.method == "box"
    # The box layout keeps the chip upright: no rotation in the transform.
    assert aligned.transform[1, 0] == pytest.approx(0.0)
    forced = align_face(astronaut, HaarFaceDetector().detect(astronaut)[0], DLIB_CHIP_150, "box")
    assert forced.method == "box"


def test_tilted_face_is_straightened(astronaut: np.ndarray) -> None:
    """A 20-degree roll, aligned on its eyes, gives nearly the upright chip."""
    [upright] = HaarFaceDetector().detect(astronaut)
    centre = (upright.box[0] + upright.box[2] / 2, upright.box[1] + upright.box[3] / 2)
    rotation = cv2.getRotationMatrix2D(centre, 20, 1.0)
    tilted_image = cv2.warpAffine(astronaut, rotation, astronaut.shape[1::-1])
    # Give the aligner the true eye positions of the tilted photo, as a perfect eye detector would.
    eyes = tuple(tuple(rotation @ np.array([*e, 1.0])) for e in upright.eyes)  # type: ignore[union-attr]
    tilted = Detection(box=upright.box, confidence=1.0, eyes=eyes)  # type: ignore[arg-type]
    reference = align_face(astronaut, upright, ARCFACE_CHIP_112).chip.astype(np.float32)
    straightened = align_face(tilted_image, tilted, ARCFACE_CHIP_112).chip.astype(np.float32)
    unaligned = align_face(tilted_image, tilted, ARCFACE_CHIP_112, "box").chip.astype(np.float32)
    assert np.abs(straightened - reference).mean() < 0.5 * np.abs(unaligned - reference).mean()


def test_large_faces_are_shrunk_without_aliasing(astronaut: np.ndarray) -> None:
    """A 4x photo gives nearly the chip of the original (pyrDown before the warp)."""
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    [face] = HaarFaceDetector().detect(astronaut)
    scaled = Detection(
        box=tuple(v * 4 for v in face.box),  # type: ignore[arg-type]
        confidence=face.confidence,
        eyes=tuple((x * 4 + 1.5, y * 4 + 1.5) for x, y in face.eyes),  # type: ignore[arg-type, union-attr]
    )
    small_chip = align_face(astronaut, face, ARCFACE_CHIP_112).chip.astype(np.float32)
    big_chip = align_face(big, scaled, ARCFACE_CHIP_112).chip.astype(np.float32)
    assert np.abs(small_chip - big_chip).mean() < 6.0


def test_same_bytes_same_chip(astronaut: np.ndarray) -> None:
    detector = HaarFaceDetector()
    chips = [
        align_face(image, detector.detect(image)[0], DLIB_CHIP_150).chip
        for image in (astronaut, astronaut.copy())
    ]
    assert np.array_equal(*chips)


def test_similarity_transform_is_exact_for_two_points() -> None:
    matrix = similarity_transform(((10.0, 20.0), (30.0, 25.0)), ((1.0, 1.0), (5.0, 1.0)))
    np.testing.assert_allclose(apply(matrix, (10.0, 20.0)), (1.0, 1.0), atol=1e-12)
    np.testing.assert_allclose(apply(matrix, (30.0, 25.0)), (5.0, 1.0), atol=1e-12)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(((1.0, 1.0), (1.0, 1.0)), ((0.0, 0.0), (1.0, 0.0)))


@pytest.mark.parametrize(
    ("size", "left", "right"),
    [
        (4, (1.0, 1.0), (2.0, 1.0)),
        (100, (60.0, 40.0), (40.0, 40.0)),
        (100, (10.0, 40.0), (120.0, 40.0)),
    ],
    ids=["too-small", "eyes-swapped", "eye-outside"],
)
def test_chip_spec_rejects_impossible_layouts(
    size: int, left: tuple[float, float], right: tuple[float, float]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        ChipSpec(size, left, right)


def test_chip_spec_json_round_trip() -> None:
    assert ChipSpec.from_json(DLIB_CHIP_150.to_json()) == DLIB_CHIP_150
