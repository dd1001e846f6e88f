"""68-point landmarks: the Keras port of face-api's landmark net, its runtime, dlib-style chips.

The port's proof is numerical: face-api's own JavaScript (TF.js 4.22 on the wasm backend, run
by ``tests/js/landmarks.js``) and our network see the same inputs and must agree to 1e-5, both
on raw 112 px net inputs and end to end (crop, pad, resize, map back) on face crops of odd
shapes; perturbed ports must fail that check. The runtime is then checked on a real face:
landmarks on the right features, a rolled copy straightened, every chip layout from one fit,
and implausible landmarks falling back to the eyes or the box.

Package-backed tests export into the session's pretrained cache (``tests/plugins/pretrained.py``:
never the user's, so a stale export cannot stand in); without the package (no npm, no registry,
nothing cached) they skip, and without node or ``npm ci --prefix tests/js`` the JavaScript
comparisons skip, saying why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facerank.descriptor.landmarks import (
    MANIFEST_NAME,
    MEAN_RGB,
    build_landmark_net,
    ensure_landmark_model,
    expected_weight_shapes,
    landmark_model_dir,
)
from facerank.descriptor.pretrained import package_model_dir
from facerank.descriptor.tfjs import read_tfjs_weights
from facerank.embedding import LbpEmbedder
from facerank.errors import ModelLoadError
from facerank.faces import (
    ARCFACE_CHIP_112,
    DLIB_CHIP_150,
    ChipSpec,
    Detection,
    HaarFaceDetector,
    align_face,
)
from facerank.faces.align import GALLERY_CROP_256, rechip
from facerank.faces.landmarks import (
    DLIB_CHIP_PADDING,
    DLIB_CHIP_SIZE,
    DLIB_MEAN_FACE,
    LANDMARK_INPUT_SIZE,
    LandmarkLocator,
    face_crop,
    landmark_chip,
    net_input,
    plausible,
    plausible_chip,
    points_from_output,
)
from facerank.pipeline import FacePipeline
from facerank.settings import Settings
from tests.plugins.faceapi_js import run_face_api

keras = pytest.importorskip("keras")

TOLERANCE = 1e-5
"""Largest absolute difference allowed between our landmarks and face-api's (fractions)."""

ODD_CROPS = [(177, 67, 93, 93), (170, 60, 110, 90), (160, 50, 80, 121), (-20, -10, 120, 100)]
"""Astronaut crops of every kind face-api handles: square, wide, tall (odd padding), clipped."""


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


# --- the port without the package: the weights it takes ------------------------------------


def synthetic_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.normal(0, 0.1, shape).astype(np.float32)
        for name, shape in expected_weight_shapes().items()
    }


def test_build_refuses_weights_that_are_not_the_landmark_nets() -> None:
    weights = synthetic_weights()
    missing = {k: v for k, v in weights.items() if k != "dense2/conv1/bias"}
    with pytest.raises(ModelLoadError, match=r"missing \['dense2/conv1/bias'\]"):
        build_landmark_net(missing)
    with pytest.raises(ModelLoadError, match=r"unexpected \['fc/extra'\]"):
        build_landmark_net({**weights, "fc/extra": np.zeros(3, np.float32)})
    wrong = {**weights, "fc/weights": np.zeros((128, 136), np.float32)}
    with pytest.raises(ModelLoadError, match=r"fc/weights has shape \(128, 136\)"):
        build_landmark_net(wrong)


def test_every_weight_lands_in_the_graph() -> None:
    """Each TF.js tensor is copied into exactly one layer weight, values unchanged."""
    weights = synthetic_weights()
    model = build_landmark_net(weights)
    loaded = sorted(float(np.sum(w)) for w in model.get_weights())
    given = sorted(float(np.sum(w)) for w in weights.values())
    np.testing.assert_allclose(loaded, given, rtol=1e-6)
    assert model.count_params() == sum(w.size for w in weights.values())
    out = model(np.zeros((2, LANDMARK_INPUT_SIZE, LANDMARK_INPUT_SIZE, 3), np.float32))
    assert tuple(out.shape) == (2, 136)


# --- the crop face-api feeds the net, and dlib's chip transform, in plain NumPy ------------


def test_face_crop_clips_and_floors_like_face_api() -> None:
    assert face_crop((-20.0, -10.0, 120.0, 100.0), 512, 512) == (0, 0, 100, 90)
    assert face_crop((450.5, 400.7, 100.0, 150.0), 512, 512) == (450, 400, 61, 111)
    assert face_crop((600.0, 10.0, 50.0, 50.0), 512, 512) is None


def test_net_input_pads_to_a_centred_square_then_resizes(astronaut: np.ndarray) -> None:
    """A tall white crop gets zero columns either side, the larger half after it."""
    white = np.full((300, 300, 3), 255, np.uint8)
    tall = net_input(white, (0, 0, 101, 112))  # 11 columns of padding: 5 before, 6 after
    assert tall.shape == (LANDMARK_INPUT_SIZE, LANDMARK_INPUT_SIZE, 3)
    assert tall.dtype == np.float32
    zero = np.flatnonzero(tall[:, :, 0].max(axis=0) == 0)
    np.testing.assert_array_equal(zero, [0, 1, 2, 3, 4, 106, 107, 108, 109, 110, 111])
    halved = net_input(white, (0, 0, 101, 224))  # 123 columns: 61 before, so 31 zero outputs
    assert np.count_nonzero(halved[0, :, 0] == 0) == 62
    assert halved[5:, 31:81].min() == 255
    square = net_input(astronaut, (10, 10, 112, 112))  # no padding, no resize: the pixels
    np.testing.assert_array_equal(square, astronaut[10:122, 10:122].astype(np.float32))
    # Resizing 224 -> 112 samples every other pixel: TF's legacy grid, no half-pixel shift.
    np.testing.assert_array_equal(
        net_input(astronaut, (0, 0, 224, 224)), astronaut[0:224:2, 0:224:2].astype(np.float32)
    )


def dlib_shape(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    """68 points: dlib's mean face (points 17 to 67) moved by a similarity; the jaw at 0."""
    template = (DLIB_CHIP_PADDING + DLIB_MEAN_FACE) / (2 * DLIB_CHIP_PADDING + 1)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = np.zeros((68, 2))
    points[17:] = template * DLIB_CHIP_SIZE * scale @ rotation.T + shift
    return points


def test_landmark_chip_is_dlibs_extraction_rectangle() -> None:
    """dlib maps chip pixels (0, 0), (size-1, 0), (size-1, size-1) to the corners of a
    ``size * scale`` rectangle (less one pixel) centred on the template's centre, rotated."""
    scale, angle, shift = 1.7, math.radians(12), (40.0, 25.0)
    fitted = landmark_chip(dlib_shape(scale, angle, shift))
    # dlib's five-point template and its mean face differ by under a thousandth of the chip.
    assert fitted.fit_error == pytest.approx(0.0, abs=1e-3)
    assert fitted.roll_degrees == pytest.approx(12.0, abs=0.1)
    size = DLIB_CHIP_SIZE
    rotation = complex(math.cos(angle), math.sin(angle))
    centre = rotation * scale * complex(size / 2, size / 2) + complex(*shift)
    half = (size * scale - 1) / 2
    corners = [centre + rotation * half * c for c in (-1 - 1j, 1 - 1j, 1 + 1j)]
    mapped = apply(fitted.transform, [(c.real, c.imag) for c in corners])
    np.testing.assert_allclose(mapped, [(0, 0), (size - 1, 0), (size - 1, size - 1)], atol=1e-9)


def test_plausibility_rejects_what_is_not_a_face() -> None:
    box = (0, 0, 100, 100)
    face = dlib_shape(0.8, 0.0, (-10.0, -5.0))
    assert plausible(landmark_chip(face), box)
    mirrored = face.copy()
    mirrored[:, 0] = 100 - mirrored[:, 0]  # eyes swapped: a reflection is no similarity
    assert not plausible(landmark_chip(mirrored), box)
    assert not plausible(landmark_chip(dlib_shape(0.2, 0.0, (30.0, 30.0))), box)  # eyes too close
    assert not plausible(landmark_chip(dlib_shape(0.8, math.radians(60), (50.0, 0.0))), box)
    assert plausible_chip(face, box) is not None
    collapsed = np.full((68, 2), 40.0)  # no similarity maps a face onto one point
    with pytest.raises(ValueError, match="do not span"):
        landmark_chip(collapsed)
    assert plausible_chip(collapsed, box) is None
    assert plausible_chip(np.full((68, 2), np.nan), box) is None
    detection = Detection(box, 0.9, None)
    image = np.zeros((100, 100, 3), np.uint8)
    assert align_face(image, detection, DLIB_CHIP_150, "landmarks", face).method == "landmarks"
    assert align_face(image, detection, DLIB_CHIP_150, "landmarks", collapsed).method == "box"
    assert align_face(image, detection, DLIB_CHIP_150, "eyes", face).method == "box"


def test_landmarks_in_ssd_boxes_drive_the_chip_unverified() -> None:
    """Haar's boxes may hold no face, so their landmarks are verified; an SSD box above its
    threshold holds one, and a turned head's landmarks still align it better than the box."""
    box = (0, 0, 100, 100)
    narrow = dlib_shape(0.2, 0.0, (30.0, 30.0))  # eyes too close for a face filling the box
    assert not plausible(landmark_chip(narrow), box)
    image = np.zeros((100, 100, 3), np.uint8)
    haar = Detection(box, 0.9, None, detector="haar")
    ssd = Detection(box, 0.9, None, detector="ssd")
    assert align_face(image, haar, DLIB_CHIP_150, "landmarks", narrow).method == "box"
    assert align_face(image, ssd, DLIB_CHIP_150, "landmarks", narrow).method == "landmarks"
    collapsed = np.full((68, 2), 40.0)  # but points spanning no chip never drive it
    assert align_face(image, ssd, DLIB_CHIP_150, "landmarks", collapsed).method == "box"


# --- the real package: conversion, proof against face-api's JavaScript ---------------------


@pytest.fixture(scope="session")
def landmark_settings(pretrained_settings: Settings) -> Settings:
    """The session's pretrained cache, with the landmark model exported into it too."""
    ensure_landmark_model(pretrained_settings)
    return pretrained_settings


@pytest.fixture(scope="session")
def landmark_weights(landmark_settings: Settings) -> dict[str, np.ndarray]:
    return read_tfjs_weights(package_model_dir(landmark_settings) / MANIFEST_NAME)


@pytest.fixture(scope="session")
def landmark_net(landmark_weights: dict[str, np.ndarray]) -> Any:
    return build_landmark_net(landmark_weights)


@pytest.fixture(scope="session")
def locator(landmark_settings: Settings) -> LandmarkLocator:
    return LandmarkLocator(landmark_model_dir(landmark_settings))


def face_api_landmarks(
    bundle: Path, settings: Settings, images: list[np.ndarray], mode: str, work: Path
) -> np.ndarray:
    """face-api's ``faceLandmark68Net`` on ``images`` through ``tests/js/landmarks.js``."""
    run_face_api("landmarks.js", bundle, settings, images, mode=mode, output=work / "points.f32")
    return np.fromfile(work / "points.f32", "<f4").reshape(len(images), 136)


@pytest.fixture(scope="session")
def reference_inputs(astronaut: np.ndarray) -> np.ndarray:
    """Net inputs over the whole range: noise, black, white, a gradient, and the real crop."""
    size = LANDMARK_INPUT_SIZE
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, size)
    gradient = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1)], -1)
    crop = face_crop(Detection((177, 67, 93, 93), 1.0).landmark_region(), 512, 512)
    assert crop is not None
    face = net_input(astronaut, crop)
    return np.stack(
        [
            rng.uniform(0, 255, (size, size, 3)),
            np.zeros((size, size, 3)),
            np.full((size, size, 3), 255.0),
            np.concatenate([gradient, 255 - gradient[..., :1]], axis=-1),
            face,
        ]
    ).astype(np.float32)


@pytest.fixture(scope="session")
def face_api_net_outputs(
    node_bundle: Path,
    landmark_settings: Settings,
    reference_inputs: np.ndarray,
    tmp_path_factory: pytest.TempPathFactory,
) -> np.ndarray:
    return face_api_landmarks(
        node_bundle,
        landmark_settings,
        list(reference_inputs),
        "net",
        tmp_path_factory.mktemp("js-net"),
    )


def test_manifest_holds_exactly_the_tensors_the_graph_expects(landmark_settings: Settings) -> None:
    manifest = package_model_dir(landmark_settings) / MANIFEST_NAME
    [group] = json.loads(manifest.read_text(encoding="utf-8"))
    shapes = {w["name"]: tuple(w["shape"]) for w in group["weights"]}
    assert shapes == expected_weight_shapes()


def test_port_matches_face_api_javascript(
    landmark_net: Any, reference_inputs: np.ndarray, face_api_net_outputs: np.ndarray
) -> None:
    face = face_api_net_outputs[-1].reshape(68, 2)
    assert np.ptp(face, axis=0).min() > 0.5  # real landmarks spread over the crop, not zeros
    ours = landmark_net(reference_inputs).numpy()
    assert np.abs(ours - face_api_net_outputs).max() <= TOLERANCE


def _divide_by_256(model: Any, inputs: np.ndarray) -> Any:
    """The net fed ``mean + (x - mean) * 255/256``: it then computes ``(x - mean) / 256``."""
    mean = np.array(MEAN_RGB, np.float32)
    return model(mean + (inputs - mean) * np.float32(255 / 256))


def _bgr(model: Any, inputs: np.ndarray) -> Any:
    """The net fed BGR, the classic OpenCV slip."""
    return model(np.ascontiguousarray(inputs[..., ::-1]))


def _one_quantisation_step(model: Any, inputs: np.ndarray) -> Any:
    """One value of one pointwise filter off by one uint8 step of its tensor (the smallest gap
    between its distinct values): what an off-by-one in dequantising would do."""
    layer = model.get_layer("dense3_conv2")
    original = layer.get_weights()
    changed = [w.copy() for w in original]
    changed[1].flat[0] += np.diff(np.unique(original[1])).min()
    layer.set_weights(changed)
    try:
        return model(inputs)
    finally:
        layer.set_weights(original)


@pytest.mark.parametrize(
    "perturbed",
    [_divide_by_256, _bgr, _one_quantisation_step],
    ids=["divide-by-256", "bgr", "one-quantisation-step"],
)
def test_the_check_fails_for_a_perturbed_port(
    landmark_net: Any,
    reference_inputs: np.ndarray,
    face_api_net_outputs: np.ndarray,
    perturbed: Callable[[Any, np.ndarray], Any],
) -> None:
    difference = np.abs(
        np.asarray(perturbed(landmark_net, reference_inputs)) - face_api_net_outputs
    )
    assert difference.max() > TOLERANCE
    assert np.abs(landmark_net(reference_inputs).numpy() - face_api_net_outputs).max() <= TOLERANCE


def test_runtime_matches_face_api_on_crops_it_must_pad(
    locator: LandmarkLocator,
    node_bundle: Path,
    landmark_settings: Settings,
    astronaut: np.ndarray,
    tmp_path: Path,
) -> None:
    """Crop, pad to a square, resize, run the exported model, map back: as detectLandmarks."""
    crops = [face_crop(box, *astronaut.shape[:2]) for box in ODD_CROPS]
    assert all(c is not None for c in crops)
    inputs = np.stack([net_input(astronaut, c) for c in crops if c])
    relative = [
        ((points_from_output(out, c) - c[:2]) / c[2:]).ravel()
        for out, c in zip(locator.predict(inputs), crops, strict=True)
        if c
    ]
    pixels = [astronaut[y : y + h, x : x + w] for x, y, w, h in crops if (x, y, w, h)]
    reference = face_api_landmarks(node_bundle, landmark_settings, pixels, "crops", tmp_path)
    assert np.abs(relative - reference).max() <= TOLERANCE


def test_export_is_idempotent_and_serves_the_port(
    landmark_settings: Settings, landmark_net: Any, locator: LandmarkLocator
) -> None:
    target = landmark_model_dir(landmark_settings)
    stamp = (target / "saved_model.pb").stat().st_mtime_ns
    assert ensure_landmark_model(landmark_settings) == target
    assert (target / "saved_model.pb").stat().st_mtime_ns == stamp
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []
    inputs = np.random.default_rng(3).uniform(0, 255, (3, 112, 112, 3)).astype(np.float32)
    assert np.abs(locator.predict(inputs) - landmark_net(inputs).numpy()).max() <= TOLERANCE


def test_a_folder_that_is_not_the_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load the landmark model"):
        LandmarkLocator(tmp_path).predict(np.zeros((1, 112, 112, 3), np.float32))


# --- the runtime on a real face --------------------------------------------------------------


def test_landmarks_land_on_the_astronauts_features(
    locator: LandmarkLocator, astronaut: np.ndarray
) -> None:
    [face] = HaarFaceDetector().detect(astronaut)
    assert face.eyes is not None
    [points] = locator.locate(astronaut, [face.landmark_region()])
    assert points is not None
    assert points.shape == (68, 2)
    left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    span = float(np.linalg.norm(right - left))
    # The eye cascade's independent eye centres: within a fifth of the eye distance.
    assert np.linalg.norm(left - face.eyes[0]) < 0.2 * span
    assert np.linalg.norm(right - face.eyes[1]) < 0.2 * span
    nose, mouth, chin = points[33], points[48:68].mean(axis=0), points[8]
    assert left[0] < nose[0] < right[0]
    assert max(left[1], right[1]) < nose[1] < mouth[1] < chin[1]
    assert points[0, 0] < left[0]
    assert points[16, 0] > right[0]
    assert plausible(landmark_chip(points), face.box)


def rolled(image: np.ndarray, box: tuple[int, ...], degrees: float) -> np.ndarray:
    centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
    rotation = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(image, rotation, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)


def test_a_rolled_face_gives_nearly_the_upright_chip(
    locator: LandmarkLocator, astronaut: np.ndarray
) -> None:
    """Rolled 15 degrees and found again by Haar: the landmark chip undoes the roll."""
    detector = HaarFaceDetector()
    [upright] = detector.detect(astronaut)
    tilted_image = rolled(astronaut, upright.box, 15)
    tilted = detector.detect(tilted_image)[0]
    [upright_points] = locator.locate(astronaut, [upright.landmark_region()])
    [tilted_points] = locator.locate(tilted_image, [tilted.landmark_region()])
    assert upright_points is not None
    assert tilted_points is not None
    roll = landmark_chip(upright_points).roll_degrees - landmark_chip(tilted_points).roll_degrees
    assert roll == pytest.approx(15, abs=2)
    reference = align_face(astronaut, upright, DLIB_CHIP_150, "landmarks", upright_points)
    straightened = align_face(tilted_image, tilted, DLIB_CHIP_150, "landmarks", tilted_points)
    unaligned = align_face(tilted_image, tilted, DLIB_CHIP_150, "box")
    assert reference.method == straightened.method == "landmarks"

    def difference(aligned: Any) -> float:
        return float(np.abs(aligned.chip.astype(np.float32) - reference.chip).mean())

    assert difference(straightened) < 12
    assert difference(straightened) < 0.3 * difference(unaligned)


@pytest.mark.parametrize("spec", [DLIB_CHIP_150, ARCFACE_CHIP_112], ids=["dlib150", "arcface112"])
def test_every_layout_comes_from_one_fit(
    locator: LandmarkLocator, astronaut: np.ndarray, spec: ChipSpec
) -> None:
    """The gallery crop, rechipped, reproduces the landmark chip of any embedder's layout."""
    [face] = HaarFaceDetector().detect(astronaut)
    [points] = locator.locate(astronaut, [face.landmark_region()])
    chip = align_face(astronaut, face, spec, "landmarks", points)
    crop = align_face(astronaut, face, GALLERY_CROP_256, "landmarks", points)
    assert chip.method == crop.method == "landmarks"
    # Both transforms agree on where the image goes: the crop's, mapped onto spec's eyes.
    eyes = (GALLERY_CROP_256.left_eye, GALLERY_CROP_256.right_eye)
    crop_to_chip = align_face(
        crop.chip, Detection((0, 0, 256, 256), 1.0, eyes), spec, "eyes"
    ).transform
    composed = crop_to_chip @ np.vstack([crop.transform, (0, 0, 1)])
    np.testing.assert_allclose(composed, chip.transform, atol=1e-9)
    again = rechip(crop.chip, GALLERY_CROP_256, spec).astype(np.float32)
    assert np.abs(again - chip.chip).mean() < 3.0


def test_implausible_landmarks_fall_back_and_say_so(
    locator: LandmarkLocator, astronaut: np.ndarray
) -> None:
    """A box on the background: the net still answers, but nothing like a face."""
    background = (0, 0, 100, 100)
    [points] = locator.locate(astronaut, [background])
    assert points is not None
    assert not plausible(landmark_chip(points), background)
    eyes = ((26.0, 38.0), (71.0, 38.0))
    with_eyes = Detection(background, 0.9, eyes)
    without = Detection(background, 0.9, None)
    assert align_face(astronaut, with_eyes, DLIB_CHIP_150, "landmarks", points).method == "eyes"
    assert align_face(astronaut, without, DLIB_CHIP_150, "landmarks", points).method == "box"
    assert align_face(astronaut, without, DLIB_CHIP_150, "landmarks", None).method == "box"
    [edge] = locator.locate(astronaut, [(600, 600, 50, 50)])  # nothing of it inside the image
    assert edge is None


def test_pipeline_aligns_on_landmarks_from_settings(
    landmark_settings: Settings, astronaut: np.ndarray
) -> None:
    settings = Settings.from_env(
        {"FACERANK_ALIGN": "landmarks"},
        data_dir=landmark_settings.data_dir,
        cache_dir=landmark_settings.cache_dir,
    )
    pipeline = FacePipeline.from_settings(settings, embedder=LbpEmbedder())
    [face] = pipeline.analyze(astronaut).faces
    assert face.aligned.method == "landmarks"
    assert face.landmarks is not None
    assert face.landmarks.shape == (68, 2)
    crop = pipeline.align(astronaut, face, GALLERY_CROP_256)
    assert crop.method == "landmarks"
    again = rechip(crop.chip, GALLERY_CROP_256, pipeline.embedder.chip).astype(np.float32)
    assert np.abs(again - face.aligned.chip).mean() < 3.0
    with pytest.raises(ValueError, match="needs a LandmarkLocator"):
        FacePipeline(HaarFaceDetector(), LbpEmbedder(), align_mode="landmarks")
