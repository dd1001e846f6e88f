"""Which face a photo is about (:mod:`facerank.faces.primary`): size weighed against distance
from the centre, the policies of ``FACERANK_ENROLL_FACES``, and the real pipeline's choice on a
photo whose largest face is a bystander cut by the frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from facerank.faces.detect import Box, Detection
from facerank.faces.primary import choose_faces, prominence
from facerank.pipeline import FacePipeline
from facerank.settings import Settings
from tests.plugins.faces import ASTRONAUT_FACE_BOX, iou


@dataclass(frozen=True)
class Found:
    detection: Detection


def found(box: Box) -> Found:
    return Found(Detection(box=box, confidence=0.9, detector="ssd"))


WIDTH, HEIGHT = 640, 480


def test_a_bystander_cut_by_the_frame_loses_to_the_subject_in_the_middle() -> None:
    bystander = found((560, 150, 80, 130))  # larger, at the right edge
    subject = found((280, 180, 70, 90))
    assert choose_faces([bystander, subject], "primary", WIDTH, HEIGHT) == [subject]


def test_a_face_much_larger_wins_when_it_is_not_far_out() -> None:
    near = found((180, 120, 200, 240))  # centre (280, 240): 40 px off
    small = found((300, 220, 40, 40))  # dead centre
    assert choose_faces([near, small], "primary", WIDTH, HEIGHT) == [near]


def test_prominence_falls_with_distance_and_grows_with_area() -> None:
    centred = prominence((270, 190, 100, 100), WIDTH, HEIGHT)
    assert centred == pytest.approx(100 * 100)
    assert prominence((470, 190, 100, 100), WIDTH, HEIGHT) < centred
    assert prominence((245, 165, 150, 150), WIDTH, HEIGHT) > centred


def test_policies() -> None:
    faces = [found((0, 0, 160, 160)), found((290, 210, 60, 60))]
    assert choose_faces(faces, "largest", WIDTH, HEIGHT) == faces[:1]
    assert choose_faces(faces, "all", WIDTH, HEIGHT) == faces
    assert choose_faces(faces, "primary", WIDTH, HEIGHT) == faces[1:]
    assert choose_faces([], "primary", WIDTH, HEIGHT) == []
    twins = [found((100, 190, 100, 100)), found((440, 190, 100, 100))]  # mirror images
    assert choose_faces(twins, "primary", WIDTH, HEIGHT) == twins[:1]  # the first on a tie


def test_the_pipeline_enrolls_the_centred_face_not_the_larger_one_at_the_edge(
    fetched_settings: Settings, astronaut: np.ndarray
) -> None:
    """Two astronauts: a large one cut by the left edge, a smaller one in the middle."""
    x, y, w, h = ASTRONAUT_FACE_BOX
    head = astronaut[max(0, y - 60) : y + h + 80, max(0, x - 60) : x + w + 60]
    canvas = np.full((480, 800, 3), 128, np.uint8)
    big = cv2.resize(head, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_AREA)
    canvas[: min(480, big.shape[0]), : big.shape[1] - 60] = big[:480, 60:]
    small = cv2.resize(head, None, fx=1.0, fy=1.0)
    top, left = (480 - small.shape[0]) // 2, (800 - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    pipeline = FacePipeline.from_settings(fetched_settings)
    photo = pipeline.analyze(canvas)
    assert len(photo.faces) == 2
    largest, central = photo.faces
    assert largest.detection.box[0] < 80  # the bystander at the edge is the larger
    assert photo.subject() is central
    assert photo.subject("largest") is largest
    assert photo.chosen("all") == photo.faces
    centre_box = (left + 60, top + 60, w, h)
    assert iou(central.detection.box, centre_box) > 0.5
