"""Finding faces with their landmarks (:mod:`facerank.faces.find`), the rescue of faces the SSD
scores below its threshold, and HOG's second opinion: real SSD, HOG and landmark models, faces
scikit-image ships."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skdata

from facerank.descriptor.landmarks import landmark_model_dir
from facerank.descriptor.ssd import ssd_model_dir
from facerank.faces import LandmarkLocator, SsdFaceDetector
from facerank.faces.find import find_faces
from facerank.faces.hog import HogFaceDetector
from facerank.faces.landmarks import plausible_chip
from facerank.faces.ssd import SSD_UNSURE_CONFIDENCE
from facerank.pipeline import detector_from_settings
from facerank.settings import Settings


@pytest.fixture(scope="module")
def locator(fetched_settings: Settings) -> LandmarkLocator:
    return LandmarkLocator(landmark_model_dir(fetched_settings))


def strict_ssd(settings: Settings, threshold: float) -> SsdFaceDetector:
    """The SSD with a high threshold, so that real faces fall into its unsure band."""
    return SsdFaceDetector(
        ssd_model_dir(settings), min_confidence=threshold, unsure_floor=SSD_UNSURE_CONFIDENCE
    )


def test_faces_come_with_their_landmarks(
    fetched_settings: Settings, locator: LandmarkLocator, astronaut: np.ndarray
) -> None:
    detector = detector_from_settings(fetched_settings)
    [found] = find_faces(astronaut, detector, locator)
    [detection] = detector.detect(astronaut)
    assert found.detection == detection
    assert found.landmarks is not None
    assert found.landmarks.shape == (68, 2)
    [bare] = find_faces(astronaut, detector, None)
    assert bare.landmarks is None


def test_an_unsure_face_whose_landmarks_fit_is_rescued(
    fetched_settings: Settings, locator: LandmarkLocator, astronaut: np.ndarray
) -> None:
    """At a threshold of 0.995 the astronaut's face (about 0.99) is unsure: the detector alone
    finds nothing, the landmarks confirm the face."""
    detector = strict_ssd(fetched_settings, 0.995)
    assert detector.detect(astronaut) == []
    [unsure] = detector.unsure(astronaut)
    assert SSD_UNSURE_CONFIDENCE <= unsure.confidence < 0.995
    [found] = find_faces(astronaut, detector, locator)
    assert found.detection == unsure
    assert found.landmarks is not None
    assert find_faces(astronaut, detector, None) == []  # nothing verifies it without landmarks


def test_unsure_boxes_whose_landmarks_do_not_fit_stay_refused(
    fetched_settings: Settings, locator: LandmarkLocator
) -> None:
    """scikit-image's cameraman scores 0.76 on a box whose landmarks fit no face (a man seen
    from behind his camera): offered at a threshold of 0.9, refused by the landmarks."""
    camera = np.ascontiguousarray(np.repeat(skdata.camera()[..., None], 3, axis=2))
    detector = strict_ssd(fetched_settings, 0.9)
    assert detector.detect(camera) == []
    assert detector.unsure(camera)
    assert find_faces(camera, detector, locator) == []


def test_a_threshold_the_user_sets_is_taken_literally(
    fetched_settings: Settings, locator: LandmarkLocator, astronaut: np.ndarray
) -> None:
    strict = Settings.from_env({}, cache_dir=fetched_settings.cache_dir, min_face_confidence=0.995)
    detector = detector_from_settings(strict)
    assert isinstance(detector, SsdFaceDetector)
    assert detector.unsure(astronaut) == []
    assert find_faces(astronaut, detector, locator) == []
    default = detector_from_settings(fetched_settings)
    assert isinstance(default, SsdFaceDetector)
    assert default.unsure_floor == SSD_UNSURE_CONFIDENCE
    assert isinstance(default.fallback, HogFaceDetector)
    assert detector.fallback is None


def test_hog_gives_a_second_opinion_when_nothing_is_rescued(
    fetched_settings: Settings, locator: LandmarkLocator, astronaut: np.ndarray
) -> None:
    """At 0.995 and with no unsure band the SSD has nothing to offer: HOG finds the face, the
    landmark net locates its points in the SSD-shaped box, and the face says who found it."""
    detector = SsdFaceDetector(
        ssd_model_dir(fetched_settings),
        min_confidence=0.995,
        unsure_floor=None,
        fallback=HogFaceDetector(),
    )
    assert detector.detect(astronaut) == []
    [found] = find_faces(astronaut, detector, locator)
    assert found.detection.detector == "hog"
    assert found.landmarks is not None
    assert plausible_chip(found.landmarks, found.detection.box) is not None
    [bare] = find_faces(astronaut, detector, None)
    assert bare.detection == found.detection
    assert bare.landmarks is None


def test_a_rescued_face_needs_no_second_opinion(
    fetched_settings: Settings, locator: LandmarkLocator, astronaut: np.ndarray
) -> None:
    detector = SsdFaceDetector(
        ssd_model_dir(fetched_settings),
        min_confidence=0.995,
        unsure_floor=SSD_UNSURE_CONFIDENCE,
        fallback=HogFaceDetector(),
    )
    [found] = find_faces(astronaut, detector, locator)
    assert found.detection.detector == "ssd"


@pytest.mark.parametrize("name", ["coffee", "rocket"])
def test_no_second_opinion_finds_a_face_where_there_is_none(
    fetched_settings: Settings, locator: LandmarkLocator, name: str
) -> None:
    """A coffee cup, a rocket: the SSD, its unsure band and HOG all find nothing."""
    photo = np.ascontiguousarray(getattr(skdata, name)()[..., :3])
    assert find_faces(photo, detector_from_settings(fetched_settings), locator) == []
