"""face-api's SSD MobileNet v1 face detector: the Keras port, its proof, the detector around it.

The port's proof is numerical: face-api's own JavaScript (TF.js 4.22 on the wasm backend, run
by ``tests/js/ssd.js``) and our code see the same photos and must agree within 1e-4, both on
the network's decoded output before NMS (boxes as fractions of the 512 px square, scores) and
on the final detections (boxes as fractions of the photo, scores), photos of every shape
included, so the padding side and the resize are checked too; deliberately wrong ports
(padding centred, scaled by 1/255, BGR, one weight off by a quantisation step) must fail that
check. The detector is then checked on real faces: the astronaut, face-api's group photos
(every face, largest first, no duplicates), photos without a face, thresholds, threads.

Package-backed tests use the session's ``fetched_settings`` cache (``tests/plugins/
pretrained.py``); without the package they skip, and without node or ``npm ci --prefix
tests/js`` the JavaScript comparisons skip, saying why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skimage import data as skdata

from facerank.descriptor.pretrained import package_model_dir
from facerank.descriptor.ssd import (
    MANIFEST_NAME,
    build_ssd_net,
    ensure_ssd_model,
    expected_weight_shapes,
    ssd_model_dir,
)
from facerank.descriptor.tfjs import read_tfjs_weights
from facerank.errors import ModelLoadError
from facerank.faces import DLIB_CHIP_150, Detection, HaarFaceDetector, SsdFaceDetector, align_face
from facerank.faces.ssd import (
    ANCHORS,
    SSD_INPUT_SIZE,
    image_box,
    non_max_suppression,
    ssd_input,
)
from facerank.imaging.resize import square_resize
from facerank.pipeline import detector_from_settings
from facerank.settings import Settings
from tests.plugins.faceapi_js import run_face_api
from tests.plugins.faces import ASTRONAUT_FACE_BOX, SAMPLE_PHOTO_FACES, iou, paste_faces

keras = pytest.importorskip("keras")

TOLERANCE = 1e-4
"""Largest absolute difference allowed between ours and face-api's: scores, and box edges as
fractions of the 512 px square (raw output) or of the photo (detections)."""


# --- without the package: the weights the port takes, NMS, box mapping, padding ------------


def synthetic_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {
        name: rng.normal(0, 0.05, shape).astype(np.float32)
        for name, shape in expected_weight_shapes().items()
    }
    for name in weights:  # batch-norm variances must be positive
        if name.endswith("moving_variance"):
            weights[name] = np.abs(weights[name]) + 0.5
    return weights


def test_build_refuses_weights_that_are_not_the_detectors() -> None:
    weights = synthetic_weights()
    missing = {k: v for k, v in weights.items() if k != "Output/extra_dim"}
    with pytest.raises(ModelLoadError, match=r"missing \['Output/extra_dim'\]"):
        build_ssd_net(missing)
    with pytest.raises(ModelLoadError, match=r"unexpected \['extra'\]"):
        build_ssd_net({**weights, "extra": np.zeros(3, np.float32)})
    name = "Prediction/BoxPredictor_5/ClassPredictor/weights"
    with pytest.raises(ModelLoadError, match=r"has shape \(1, 1, 64, 18\)"):
        build_ssd_net({**weights, name: np.zeros((1, 1, 64, 18), np.float32)})


def test_every_weight_lands_in_the_graph() -> None:
    weights = synthetic_weights()
    model = build_ssd_net(weights)
    priors = weights.pop("Output/extra_dim")
    loaded = sorted(float(np.sum(w)) for w in model.get_weights())
    given = sorted(float(np.sum(w)) for w in weights.values())
    np.testing.assert_allclose(loaded, given, rtol=1e-5)
    out = model(np.zeros((1, SSD_INPUT_SIZE, SSD_INPUT_SIZE, 3), np.float32))
    assert tuple(out["boxes"].shape) == (1, ANCHORS, 4)
    assert tuple(out["scores"].shape) == (1, ANCHORS)
    assert priors.shape == (1, ANCHORS, 4)


def test_nms_keeps_the_best_of_overlapping_boxes_above_the_threshold() -> None:
    boxes = np.array(
        [
            [0.10, 0.10, 0.50, 0.50],  # a face
            [0.12, 0.11, 0.52, 0.49],  # the same face, a little worse: suppressed
            [0.60, 0.60, 0.90, 0.90],  # another face
            [0.30, 0.30, 0.70, 0.70],  # overlaps the first by IoU 0.14: kept
            [0.00, 0.00, 0.20, 0.20],  # exactly at the threshold: not a candidate
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.95, 0.8, 0.7, 0.5], np.float32)
    assert non_max_suppression(boxes, scores, score_threshold=0.5) == [1, 2, 3]
    assert non_max_suppression(boxes, scores, score_threshold=0.5, max_output=2) == [1, 2]
    assert non_max_suppression(boxes, scores, score_threshold=0.96) == []
    # Swapped corners are the same box to face-api's IOU; a box without area overlaps nothing.
    flipped = boxes[[0, 1]][:, [2, 3, 0, 1]]
    assert non_max_suppression(flipped, scores[:2], score_threshold=0.5) == [1]
    empty = np.array([[0.1, 0.1, 0.1, 0.5], [0.1, 0.1, 0.1, 0.5]], np.float32)
    assert non_max_suppression(empty, scores[:2], score_threshold=0.5) == [1, 0]


def test_boxes_map_back_through_the_padding_like_face_api() -> None:
    """A 512x400 photo fills the square's top 400 rows: its heights scale by 512/400."""
    box = np.array([0.25, 0.5, 0.5, 0.75], np.float32)  # ymin, xmin, ymax, xmax
    assert image_box(box, 512, 400) == pytest.approx((256.0, 128.0, 128.0, 128.0))
    # Clipped to the square; the rounded resized side sets the scale (300 -> 512 * 300/301).
    assert image_box(np.array([-0.1, 0.9, 0.5, 1.2]), 301, 300) == pytest.approx(
        (0.9 * 301, 0.0, 0.1 * 301, 0.5 * 300 * 512 / 510)
    )


def test_input_is_padded_at_the_bottom_and_right() -> None:
    white = np.full((200, 300, 3), 255, np.uint8)
    wide = ssd_input(white)
    assert wide.shape == (SSD_INPUT_SIZE, SSD_INPUT_SIZE, 3)
    rows = np.flatnonzero(wide[:, :, 0].max(axis=1) > 0)
    assert rows[0] == 0
    assert rows[-1] == 341  # 200 of 300 rows: 512 * 200/300 = 341.3 sampled from the photo
    tall = ssd_input(np.ascontiguousarray(white.transpose(1, 0, 2)))
    assert np.flatnonzero(tall[:, :, 0].max(axis=0) > 0)[-1] == 341
    centred = square_resize(white, (0, 0, 300, 200), SSD_INPUT_SIZE, centred=True)
    assert centred[0].max() == 0  # the landmark net's padding would put zeros on top


# --- the real package: conversion, proof against face-api's JavaScript ---------------------


@pytest.fixture(scope="session")
def ssd_weights(fetched_settings: Settings) -> dict[str, np.ndarray]:
    return read_tfjs_weights(package_model_dir(fetched_settings) / MANIFEST_NAME)


@pytest.fixture(scope="session")
def ssd_net(ssd_weights: dict[str, np.ndarray]) -> Any:
    return build_ssd_net(ssd_weights)


@pytest.fixture(scope="session")
def detector(fetched_settings: Settings) -> SsdFaceDetector:
    """Every face face-api's ``locateFaces`` reports at its default threshold, any size, and
    nothing more (no zoomed-out search)."""
    return SsdFaceDetector(
        ssd_model_dir(fetched_settings),
        min_face_size=1,
        max_faces=100,
        min_confidence=0.5,
        zoom_out=(),
    )


def face_api_ssd(
    bundle: Path, settings: Settings, images: list[np.ndarray], mode: str, work: Path
) -> Any:
    """face-api's ``ssdMobilenetv1`` on ``images`` through ``tests/js/ssd.js``."""
    output = work / ("out.f32" if mode == "net" else "out.json")
    run_face_api("ssd.js", bundle, settings, images, mode=mode, output=output)
    if mode == "net":
        return np.fromfile(output, "<f4").reshape(len(images), ANCHORS, 5)
    return json.loads(output.read_text())


@pytest.fixture(scope="session")
def photos(astronaut: np.ndarray, sample_photos: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Photos of every shape: square, wide (padded below), tall (padded right), odd sizes, a
    big group photo, and noise."""
    rng = np.random.default_rng(5)
    return [
        astronaut,
        np.ascontiguousarray(astronaut[40:440]),
        np.ascontiguousarray(astronaut[:, 60:393]),
        np.ascontiguousarray(paste_faces(astronaut, [1.0, 0.6, 0.35], (301, 517))),
        sample_photos["sample4.jpg"],
        rng.integers(0, 256, (97, 131, 3), dtype=np.uint8),
    ]


@pytest.fixture(scope="session")
def face_api_raw(
    node_bundle: Path,
    fetched_settings: Settings,
    photos: list[np.ndarray],
    tmp_path_factory: pytest.TempPathFactory,
) -> np.ndarray:
    return face_api_ssd(
        node_bundle, fetched_settings, photos, "net", tmp_path_factory.mktemp("js-ssd")
    )


def raw_difference(ours: dict[str, Any], reference: np.ndarray) -> float:
    boxes = np.abs(np.asarray(ours["boxes"]) - reference[..., :4]).max()
    scores = np.abs(np.asarray(ours["scores"]) - reference[..., 4]).max()
    return float(max(boxes, scores))


def test_manifest_holds_the_tensors_the_graph_expects(ssd_weights: dict[str, Any]) -> None:
    expected = expected_weight_shapes()
    assert {name: ssd_weights[name].shape for name in expected} == expected


def test_port_matches_face_api_javascript_before_nms(
    ssd_net: Any, photos: list[np.ndarray], face_api_raw: np.ndarray
) -> None:
    assert face_api_raw[0, :, 4].max() > 0.9  # the astronaut's face: a real detection
    inputs = np.stack([ssd_input(p) for p in photos])
    assert raw_difference(ssd_net(inputs), face_api_raw) <= TOLERANCE


def _centred_padding(photo: np.ndarray) -> np.ndarray:
    """The landmark net's padding (split on both sides) instead of the SSD's (after)."""
    height, width = photo.shape[:2]
    return square_resize(photo, (0, 0, width, height), SSD_INPUT_SIZE, centred=True)


def _scaled_by_255(photo: np.ndarray) -> np.ndarray:
    """Fed x/2: the network then computes x / 255 - 1, the usual 0..1 slip."""
    return ssd_input(photo) * np.float32(0.5)


def _bgr(photo: np.ndarray) -> np.ndarray:
    return ssd_input(np.ascontiguousarray(photo[..., ::-1]))


@pytest.mark.parametrize(
    "perturbed", [_centred_padding, _scaled_by_255, _bgr], ids=["centred-padding", "1/255", "bgr"]
)
def test_the_check_fails_for_wrong_preprocessing(
    ssd_net: Any,
    photos: list[np.ndarray],
    face_api_raw: np.ndarray,
    perturbed: Callable[[np.ndarray], np.ndarray],
) -> None:
    wrong = ssd_net(np.stack([perturbed(p) for p in photos]))
    assert raw_difference(wrong, face_api_raw) > TOLERANCE


def test_the_check_fails_for_one_weight_off_by_a_quantisation_step(
    ssd_net: Any, photos: list[np.ndarray], face_api_raw: np.ndarray
) -> None:
    layer = ssd_net.get_layer("Prediction__BoxPredictor_0__ClassPredictor")
    original = layer.get_weights()
    changed = [w.copy() for w in original]
    changed[0][0, 0, :, 1] += np.diff(np.unique(original[0])).min() * 8
    layer.set_weights(changed)
    try:
        wrong = ssd_net(np.stack([ssd_input(p) for p in photos]))
    finally:
        layer.set_weights(original)
    assert raw_difference(wrong, face_api_raw) > TOLERANCE


def test_detections_match_face_api_locate_faces(
    detector: SsdFaceDetector,
    node_bundle: Path,
    fetched_settings: Settings,
    photos: list[np.ndarray],
    face_api_raw: np.ndarray,
    tmp_path: Path,
) -> None:
    """The exported model, NMS and the mapping back: the same faces, scores and boxes."""
    inputs = np.stack([ssd_input(p) for p in photos])
    boxes, scores = detector.predict(inputs)
    assert raw_difference({"boxes": boxes, "scores": scores}, face_api_raw) <= TOLERANCE
    reference = face_api_ssd(node_bundle, fetched_settings, photos, "detect", tmp_path)
    assert [len(r) for r in reference][:5] == [1, 1, 1, 3, 4]
    for photo, expected in zip(photos, reference, strict=True):
        height, width = photo.shape[:2]
        size = np.array([width, height, width, height])
        ours = sorted(detector.detect(photo), key=lambda d: -d.confidence)
        assert len(ours) == len(expected)
        for found, (score, *box) in zip(ours, expected, strict=True):
            assert found.detector == "ssd"
            assert abs(found.confidence - score) <= TOLERANCE
            assert found.region is not None
            assert np.abs((np.array(found.region) - box) / size).max() <= TOLERANCE


def test_export_is_idempotent_and_serves_the_port(
    fetched_settings: Settings, ssd_net: Any, detector: SsdFaceDetector
) -> None:
    target = ssd_model_dir(fetched_settings)
    stamp = (target / "saved_model.pb").stat().st_mtime_ns
    assert ensure_ssd_model(fetched_settings) == target
    assert (target / "saved_model.pb").stat().st_mtime_ns == stamp
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []
    inputs = np.random.default_rng(3).uniform(0, 255, (2, 512, 512, 3)).astype(np.float32)
    boxes, scores = detector.predict(inputs)
    expected = ssd_net(inputs)
    assert np.abs(boxes - expected["boxes"].numpy()).max() <= TOLERANCE
    assert np.abs(scores - expected["scores"].numpy()).max() <= TOLERANCE


def test_a_folder_that_is_not_the_model_is_refused(tmp_path: Path, astronaut: np.ndarray) -> None:
    with pytest.raises(ModelLoadError, match="cannot load the SSD face detector"):
        SsdFaceDetector(tmp_path).detect(astronaut)


# --- the detector on real photos ---------------------------------------------------------


@pytest.fixture(scope="session")
def default_ssd(fetched_settings: Settings) -> SsdFaceDetector:
    found = detector_from_settings(fetched_settings)
    assert isinstance(found, SsdFaceDetector)
    return found


def test_the_astronaut_has_one_face_where_it_is(
    default_ssd: SsdFaceDetector, astronaut: np.ndarray
) -> None:
    [face] = default_ssd.detect(astronaut)
    assert face.detector == "ssd"
    assert face.eyes is None
    assert face.confidence > 0.9
    assert iou(face.box, ASTRONAUT_FACE_BOX) > 0.6
    assert face.region is not None
    assert np.abs(np.array(face.region) - face.box).max() <= 1.0


def test_ssd_faces_align_on_their_box_in_eyes_mode(
    default_ssd: SsdFaceDetector, astronaut: np.ndarray
) -> None:
    """SSD finds no eyes: ``eyes`` alignment uses the eye positions calibrated in SSD boxes."""
    [face] = default_ssd.detect(astronaut)
    aligned = align_face(astronaut, face, DLIB_CHIP_150, "eyes")
    assert aligned.method == "box"
    left, right = (aligned.transform @ np.array([*eye, 1.0]) for eye in face.box_eyes())
    np.testing.assert_allclose([left, right], [DLIB_CHIP_150.left_eye, DLIB_CHIP_150.right_eye])


def test_every_face_of_the_group_photos_largest_first_without_duplicates(
    default_ssd: SsdFaceDetector, sample_photos: dict[str, np.ndarray]
) -> None:
    for name, photo in sample_photos.items():
        faces = default_ssd.detect(photo)
        assert len(faces) == SAMPLE_PHOTO_FACES[name], name
        assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
        for i, a in enumerate(faces):
            for b in faces[i + 1 :]:
                assert iou(a.box, b.box) < 0.2, name  # distinct people, not one face twice


def test_faces_of_many_sizes_in_one_photo(
    fetched_settings: Settings, astronaut: np.ndarray
) -> None:
    group = paste_faces(astronaut, [1.0, 0.75, 0.5], (260, 640))
    faces = detector_from_settings(fetched_settings, min_face_size=30).detect(group)
    assert len(faces) == 3
    widths = [f.box[2] for f in faces]
    assert widths == sorted(widths, reverse=True)
    assert [f.box[0] for f in faces] == sorted(f.box[0] for f in faces)  # pasted left to right
    assert len(detector_from_settings(fetched_settings, min_face_size=60).detect(group)) == 2
    assert len(detector_from_settings(fetched_settings, max_faces=1).detect(group)) == 1


@pytest.mark.parametrize("name", ["coffee", "coins", "rocket", "page"])
def test_no_face_in_photos_without_one(default_ssd: SsdFaceDetector, name: str) -> None:
    image = getattr(skdata, name)()
    image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    assert default_ssd.detect(np.ascontiguousarray(image)) == []


def test_threshold_comes_from_the_settings(
    fetched_settings: Settings, astronaut: np.ndarray
) -> None:
    strict = Settings.from_env({}, cache_dir=fetched_settings.cache_dir, min_face_confidence=0.99)
    assert detector_from_settings(strict).detect(astronaut) == []
    assert len(detector_from_settings(fetched_settings).detect(astronaut)) == 1


def test_threads_share_one_detector(default_ssd: SsdFaceDetector, photos: list[np.ndarray]) -> None:
    alone = [default_ssd.detect(p) for p in photos]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(default_ssd.detect, photos * 2))
    assert together == alone * 2


# --- the setting and the fallback ------------------------------------------------------------


def test_without_the_ssd_export_haar_detects_and_says_so(
    tmp_path: Path, astronaut: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert settings.detector == "ssd"
    with caplog.at_level(logging.WARNING, logger="facerank.pipeline"):
        first = detector_from_settings(settings)
        second = detector_from_settings(settings)
    assert isinstance(first, HaarFaceDetector)
    assert isinstance(second, HaarFaceDetector)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per process, however many pipelines are built
    assert "SSD face detector is not set up" in warnings[0]
    assert "facerank models fetch" in warnings[0]
    assert first.min_confidence == 0.8  # Haar's own threshold, not the SSD's
    [face] = first.detect(astronaut)
    assert face.detector == "haar"


def test_haar_when_asked_even_with_the_ssd_set_up(
    fetched_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    haar = Settings.from_env({"FACERANK_DETECTOR": "haar"}, cache_dir=fetched_settings.cache_dir)
    with caplog.at_level(logging.WARNING, logger="facerank.pipeline"):
        assert isinstance(detector_from_settings(haar), HaarFaceDetector)
    assert caplog.records == []
    assert detector_from_settings(fetched_settings).min_confidence == 0.5


def test_each_detector_feeds_the_landmark_net_its_own_region() -> None:
    """Haar boxes are grown for the landmark net; SSD's sub-pixel boxes go in as they are."""
    haar = Detection((100, 100, 100, 100), 0.9, detector="haar")
    assert haar.landmark_region() == pytest.approx((92.5, 92.5, 115.0, 115.0))
    ssd = Detection((100, 100, 100, 120), 0.9, detector="ssd", region=(99.6, 100.2, 100.3, 119.7))
    assert ssd.landmark_region() == (99.6, 100.2, 100.3, 119.7)
    left, right = ssd.box_eyes()
    assert 100 < left[0] < 150 < right[0] < 200
    assert haar.box_eyes() != Detection((100, 100, 100, 100), 0.9, detector="ssd").box_eyes()
