"""The pretrained descriptor: TF.js weight reading, the Keras port, its proof, its export.

The proof is numerical: face-api's own JavaScript (TF.js 4.22 on the wasm backend, run by
``tests/js/recognition.js``) and our Keras network embed the same images, and must agree to
1e-5. Perturbed ports (the classic porting slips) must fail that check, or it proves nothing.

Package-backed tests share one conversion per session, into a temporary cache: a converted
model left in the user's cache by an older build must never stand in for this build's
conversion. The npm tarball is copied into that cache from the user's npm cache when present
(``fetch_package`` verifies it against the pinned integrity anyway), so after ``make setup``
these tests run offline; otherwise ``npm pack`` fetches it, and without npm or a registry they
skip, saying why.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facerank.descriptor import TfjsWeightsError, read_tfjs_weights
from facerank.descriptor.pretrained import (
    PRETRAINED_VERSION,
    RECOGNITION_MANIFEST,
    STEPS,
    ensure_pretrained,
    package_model_dir,
    pretrained_model_dir,
)
from facerank.descriptor.recognition import (
    DESCRIPTOR_DIM,
    INPUT_SIZE,
    MEAN_RGB,
    RECOGNITION_PARAMS,
    STAGES,
    build_recognition_net,
    load_tfjs_weights,
    set_trainable_from,
    tfjs_weight_names,
)
from facerank.embedding import load_embedder
from facerank.embedding.savedmodel import CARD_NAME, ModelCard
from facerank.errors import ModelLoadError
from facerank.faces import DLIB_CHIP_150, HaarFaceDetector, align_face
from facerank.imaging import read_image_file
from facerank.settings import Settings
from tests.plugins.cli import run_facerank
from tests.plugins.faces import variant

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"
TOLERANCE = 1e-5
"""Largest absolute difference allowed between our descriptors and face-api's."""


# --- the TF.js weights reader, on small generated manifests --------------------------------


def write_model(
    folder: Path, weights: list[dict[str, Any]], shards: dict[str, bytes], *, paths: Any = None
) -> Path:
    """A one-group TF.js weights manifest in ``folder`` over ``shards`` (name -> bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in shards.items():
        (folder / name).write_bytes(data)
    group = {"paths": list(shards) if paths is None else paths, "weights": weights}
    manifest = folder / "tiny-weights_manifest.json"
    manifest.write_text(json.dumps([group]), encoding="utf-8")
    return manifest


def uint8_spec(name: str, shape: list[int], scale: float, minimum: float) -> dict[str, Any]:
    return {
        "name": name,
        "shape": shape,
        "dtype": "float32",
        "quantization": {"dtype": "uint8", "scale": scale, "min": minimum},
    }


def test_offsets_follow_each_tensors_own_storage_dtype(tmp_path: Path) -> None:
    """A uint8-quantised tensor takes 1 byte per value, a float32 one 4; they share a shard."""
    quantised = np.array([0, 1, 2, 255], np.uint8)
    plain = np.array([[1.5, -2.25], [3.0, 1e-8]], "<f4")
    manifest = write_model(
        tmp_path,
        [
            uint8_spec("a/q", [2, 2], scale=0.5, minimum=-1.0),
            {"name": "b/f", "shape": [2, 2], "dtype": "float32"},
            uint8_spec("c/q", [1], scale=2.0, minimum=10.0),
        ],
        {"w.bin": quantised.tobytes() + plain.tobytes() + bytes([3])},
    )
    weights = read_tfjs_weights(manifest)
    assert list(weights) == ["a/q", "b/f", "c/q"]
    np.testing.assert_array_equal(weights["a/q"], [[-1.0, -0.5], [0.0, 126.5]])
    np.testing.assert_array_equal(weights["b/f"], plain)
    np.testing.assert_array_equal(weights["c/q"], [16.0])
    assert all(w.dtype == np.float32 and w.flags.writeable for w in weights.values())


def test_dequantisation_rounds_once_from_float64_like_javascript(tmp_path: Path) -> None:
    """TF.js computes ``q * scale + min`` in doubles and stores the float32 nearest to that."""
    q = np.arange(256, dtype=np.uint8)
    scale, minimum = 0.0007328585666768691, -0.0974701893680236
    manifest = write_model(
        tmp_path, [uint8_spec("w", [256], scale, minimum)], {"w.bin": q.tobytes()}
    )
    expected = [np.float32(int(v) * scale + minimum) for v in q]
    np.testing.assert_array_equal(read_tfjs_weights(manifest)["w"], expected)


def test_uint16_float16_and_int32_storage(tmp_path: Path) -> None:
    halves = np.array([0.5, -65504.0, 1e-3], "<f2")
    manifest = write_model(
        tmp_path,
        [
            {
                "name": "u16",
                "shape": [2],
                "dtype": "float32",
                "quantization": {"dtype": "uint16", "scale": 0.25, "min": -100.0},
            },
            {"name": "f16", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
            {"name": "i32", "shape": [2], "dtype": "int32"},
            {
                "name": "qi32",
                "shape": [3],
                "dtype": "int32",
                "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.5},
            },
        ],
        {
            "w.bin": np.array([0, 65535], "<u2").tobytes()
            + halves.tobytes()
            + np.array([-7, 2**31 - 1], "<i4").tobytes()
            + bytes([0, 2, 8])
        },
    )
    weights = read_tfjs_weights(manifest)
    np.testing.assert_array_equal(weights["u16"], [-100.0, 16283.75])
    np.testing.assert_array_equal(weights["f16"], halves.astype(np.float32))
    np.testing.assert_array_equal(weights["i32"], [-7, 2**31 - 1])
    # Math.round rounds halves up: -1.5 -> -1, -0.5 -> 0, 2.5 -> 3.
    np.testing.assert_array_equal(weights["qi32"], [-1, 0, 3])
    assert weights["qi32"].dtype == np.int32


def test_a_group_spans_its_shards_in_order(tmp_path: Path) -> None:
    values = np.arange(6, dtype="<f4")
    data = values.tobytes()
    manifest = write_model(
        tmp_path,
        [{"name": "w", "shape": [2, 3], "dtype": "float32"}],
        {"w.bin-shard1of2": data[:10], "w.bin-shard2of2": data[10:]},
    )
    np.testing.assert_array_equal(read_tfjs_weights(manifest)["w"], values.reshape(2, 3))


def test_a_model_json_with_a_weights_manifest_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(np.ones(2, "<f4").tobytes())
    model = {
        "modelTopology": {},
        "weightsManifest": [
            {"paths": ["w.bin"], "weights": [{"name": "w", "shape": [2], "dtype": "float32"}]}
        ],
    }
    (tmp_path / "model.json").write_text(json.dumps(model), encoding="utf-8")
    np.testing.assert_array_equal(read_tfjs_weights(tmp_path / "model.json")["w"], [1.0, 1.0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes(5), "shards hold 5 bytes but the tensors need 6"),
        (bytes(7), "shards hold 7 bytes but the tensors need 6"),
        (b"", "shards hold 0 bytes"),
    ],
    ids=["short", "long", "empty"],
)
def test_shards_of_the_wrong_size_are_refused(tmp_path: Path, data: bytes, message: str) -> None:
    manifest = write_model(
        tmp_path,
        [uint8_spec("a", [2], 1.0, 0.0), {"name": "b", "shape": [1], "dtype": "float32"}],
        {"w.bin": data},
    )
    with pytest.raises(TfjsWeightsError, match=message):
        read_tfjs_weights(manifest)


def test_a_missing_shard_is_refused(tmp_path: Path) -> None:
    manifest = write_model(
        tmp_path, [{"name": "w", "shape": [1], "dtype": "float32"}], {}, paths=["gone.bin"]
    )
    with pytest.raises(TfjsWeightsError, match="missing shard"):
        read_tfjs_weights(manifest)


@pytest.mark.parametrize(
    "path",
    ["../outside.bin", "/etc/passwd", "sub/../../outside.bin", "..\\outside.bin", "", 7],
    ids=["parent", "absolute", "nested-parent", "backslash", "empty", "not-a-string"],
)
def test_shard_paths_outside_the_model_folder_are_refused(tmp_path: Path, path: Any) -> None:
    (tmp_path / "outside.bin").write_bytes(bytes(4))
    manifest = write_model(
        tmp_path / "model", [{"name": "w", "shape": [1], "dtype": "float32"}], {}, paths=[path]
    )
    with pytest.raises(TfjsWeightsError, match="shard path"):
        read_tfjs_weights(manifest)


def test_a_symlinked_shard_leading_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(bytes(4))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").symlink_to(tmp_path / "secret.bin")
    manifest = write_model(folder, [{"name": "w", "shape": [1], "dtype": "float32"}], {})
    manifest.write_text(
        json.dumps(
            [{"paths": ["w.bin"], "weights": [{"name": "w", "shape": [1], "dtype": "float32"}]}]
        ),
        encoding="utf-8",
    )
    with pytest.raises(TfjsWeightsError, match="resolves outside"):
        read_tfjs_weights(manifest)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "w", "shape": [1], "dtype": "string"}, "dtype 'string'"),
        ({"name": "w", "shape": [1], "dtype": "bool"}, "dtype 'bool'"),
        (
            {"name": "w", "shape": [1], "dtype": "float32", "quantization": {"dtype": "int8"}},
            "quantization 'int8'",
        ),
        (
            {"name": "w", "shape": [1], "dtype": "float32", "quantization": {"dtype": "uint8"}},
            "needs finite 'scale' and 'min'",
        ),
        (
            {
                "name": "w",
                "shape": [1],
                "dtype": "float32",
                "quantization": {"dtype": "uint8", "scale": "NaN", "min": 0},
            },
            "needs finite 'scale' and 'min'",
        ),
        (
            {"name": "w", "shape": [1], "dtype": "int32", "quantization": {"dtype": "float16"}},
            "float16 quantization needs dtype float32",
        ),
        ({"name": "w", "shape": [-1], "dtype": "float32"}, "invalid shape"),
        ({"name": "w", "shape": [1.5], "dtype": "float32"}, "invalid shape"),
        ({"name": "w", "shape": "4", "dtype": "float32"}, "invalid shape"),
        ({"name": "", "shape": [1], "dtype": "float32"}, "non-empty string 'name'"),
    ],
    ids=[
        "string",
        "bool",
        "int8-quantization",
        "no-scale",
        "non-numeric-scale",
        "float16-int32",
        "negative-dim",
        "float-dim",
        "shape-not-list",
        "empty-name",
    ],
)
def test_unknown_or_malformed_specs_are_refused(
    tmp_path: Path, spec: dict[str, Any], message: str
) -> None:
    manifest = write_model(tmp_path, [spec], {"w.bin": bytes(4)})
    with pytest.raises(TfjsWeightsError, match=message):
        read_tfjs_weights(manifest)


def test_duplicate_names_and_malformed_manifests_are_refused(tmp_path: Path) -> None:
    twice = [{"name": "w", "shape": [1], "dtype": "float32"}] * 2
    with pytest.raises(TfjsWeightsError, match="appears twice"):
        read_tfjs_weights(write_model(tmp_path / "a", twice, {"w.bin": bytes(8)}))
    for text, message in [
        ("{", "is not JSON"),
        ('{"weights": []}', "expected a list of weight groups"),
        ("[1]", "a group must be an object"),
        ('[{"paths": "w.bin", "weights": []}]', "'paths' must be a list"),
    ]:
        (tmp_path / "bad.json").write_text(text, encoding="utf-8")
        with pytest.raises(TfjsWeightsError, match=message):
            read_tfjs_weights(tmp_path / "bad.json")
    with pytest.raises(TfjsWeightsError, match="cannot read") as caught:
        read_tfjs_weights(tmp_path / "absent.json")
    assert isinstance(caught.value, ModelLoadError)
    assert caught.value.code == "invalid_tfjs_weights"


# --- the Keras network, without the package ------------------------------------------------


@pytest.fixture(scope="module")
def blank_net() -> keras.Model:
    keras.utils.set_random_seed(3)
    return build_recognition_net()


def synthetic_weights(model: keras.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """One random tensor per face-api name the network asks for, shaped as it asks."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in model.layers:
        names = tfjs_weight_names(layer.name)
        for variable in layer.weights:
            weights[names[variable.name]] = rng.normal(0, 0.05, variable.shape).astype("f4")
    return weights


def test_network_shape_and_parameter_count(blank_net: keras.Model) -> None:
    assert blank_net.input_shape == (None, INPUT_SIZE, INPUT_SIZE, 3)
    assert blank_net.output_shape == (None, DESCRIPTOR_DIM)
    assert blank_net.count_params() == RECOGNITION_PARAMS == 5_614_592
    assert len(blank_net.trainable_weights) == 117  # every face-api tensor, BN affine included
    out = blank_net(np.zeros((2, INPUT_SIZE, INPUT_SIZE, 3), np.float32))
    assert out.shape == (2, DESCRIPTOR_DIM)


def test_every_weighted_layer_belongs_to_a_stage(blank_net: keras.Model) -> None:
    weighted = [layer.name for layer in blank_net.layers if layer.weights]
    assert all(name.startswith(STAGES) for name in weighted)
    assert {next(s for s in STAGES if n.startswith(s)) for n in weighted} == set(STAGES)
    assert weighted[0] == "stem_conv"
    assert weighted[-1] == "fc"


def test_face_api_tensors_load_one_to_one(blank_net: keras.Model) -> None:
    weights = synthetic_weights(blank_net)
    assert len(weights) == 117
    model = build_recognition_net(weights)
    for layer in model.layers:
        names = tfjs_weight_names(layer.name)
        for variable in layer.weights:
            np.testing.assert_array_equal(variable.numpy(), weights[names[variable.name]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.pop("conv128_1/conv2/scale/biases"), "lack 'conv128_1/conv2/scale/biases'"),
        (lambda w: w.update(extra=np.zeros(1, "f4")), "1 tensors fit no layer"),
        (lambda w: w.update(fc=np.zeros((128, 256), "f4")), "'fc' has shape"),
    ],
    ids=["missing", "extra", "transposed"],
)
def test_weights_that_do_not_fit_are_refused_before_loading(
    blank_net: keras.Model, change: Callable[[dict[str, np.ndarray]], Any], message: str
) -> None:
    weights = synthetic_weights(blank_net)
    change(weights)
    before = blank_net.get_layer("stem_conv").kernel.numpy()
    with pytest.raises(TfjsWeightsError, match=message):
        load_tfjs_weights(blank_net, weights)
    np.testing.assert_array_equal(blank_net.get_layer("stem_conv").kernel.numpy(), before)


def test_the_network_trains_end_to_end_including_the_folded_batch_norm(
    blank_net: keras.Model,
) -> None:
    """One gradient step reaches every variable (the folded BN affine too) and moves the output."""
    model = build_recognition_net(synthetic_weights(blank_net, seed=1))
    images = np.random.default_rng(2).uniform(0, 255, (2, INPUT_SIZE, INPUT_SIZE, 3))
    images = images.astype(np.float32)
    before = model(images).numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(images, training=True)))
    gradients = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients)
    keras.optimizers.SGD(1e-3).apply_gradients(
        zip(gradients, model.trainable_variables, strict=True)
    )
    assert np.abs(model(images).numpy() - before).max() > 1e-4


def test_set_trainable_from_freezes_earlier_stages(blank_net: keras.Model) -> None:
    model = build_recognition_net(synthetic_weights(blank_net))
    set_trainable_from(model, "stage256")
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable
    assert all(name.startswith(("stage256", "out256", "fc")) for name in trainable)
    # stage256_down 886,272 + stage256_1/_2 and out256 6 x 590,592 + fc 32,768
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == 4_462_592
    set_trainable_from(model, "stem")
    assert model.count_params() == sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    with pytest.raises(ValueError, match="unknown stage"):
        set_trainable_from(model, "stage512")


def test_the_network_survives_a_keras_save_and_load(blank_net: keras.Model, tmp_path: Path) -> None:
    """Training checkpoints the model: the custom layers must serialise and load back."""
    path = tmp_path / "net.keras"
    blank_net.save(path)
    loaded = keras.models.load_model(path)
    images = np.full((1, INPUT_SIZE, INPUT_SIZE, 3), 90.0, np.float32)
    np.testing.assert_array_equal(loaded(images).numpy(), blank_net(images).numpy())


def test_dlib_chip_matches_dlibs_five_point_template() -> None:
    """dlib's ``get_face_chip_details(shape, 150, 0.25)`` maps the 5-point shape's eye corners
    onto this template (dlib/image_transforms/interpolation.h); our chip's eye centres must be
    their midpoints, or the descriptor sees faces laid out unlike its training chips."""
    corners = {  # (x, y) in the unit face, before padding: outer and inner corner per eye
        "image_right": ((0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677)),
        "image_left": ((0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242)),
    }
    size, padding = 150, 0.25

    def centre(eye: tuple[tuple[float, float], ...]) -> tuple[float, float]:
        x, y = np.mean(eye, axis=0)
        return ((padding + x) / (1 + 2 * padding) * size, (padding + y) / (1 + 2 * padding) * size)

    assert DLIB_CHIP_150.size == size
    for ours, dlib in [
        (DLIB_CHIP_150.left_eye, centre(corners["image_left"])),
        (DLIB_CHIP_150.right_eye, centre(corners["image_right"])),
    ]:
        assert math.dist(ours, dlib) < 0.1, (ours, dlib)


# --- the real package: conversion, proof against face-api's JavaScript, export -------------


@pytest.fixture(scope="session")
def pretrained_net(pretrained_settings: Settings) -> keras.Model:
    manifest = package_model_dir(pretrained_settings) / RECOGNITION_MANIFEST
    return build_recognition_net(read_tfjs_weights(manifest))


@pytest.fixture(scope="session")
def reference_images() -> np.ndarray:
    """Inputs that exercise the whole range: noise, flat black and white, a gradient, a face;
    whole values in 0..255, so the exported model (which takes uint8 chips) sees them too."""
    from skimage import data as skdata

    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, INPUT_SIZE).round()
    gradient = np.stack(
        [ramp[None, :].repeat(INPUT_SIZE, 0), ramp[:, None].repeat(INPUT_SIZE, 1)], -1
    )
    face = skdata.astronaut()[40:190, 150:300]  # the face and some background, 150x150
    return np.stack(
        [
            rng.integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3)),
            np.zeros((INPUT_SIZE, INPUT_SIZE, 3)),
            np.full((INPUT_SIZE, INPUT_SIZE, 3), 255),
            np.concatenate([gradient, 255 - gradient[..., :1]], axis=-1),
            face,
        ]
    ).astype(np.float32)


def javascript_descriptors(package: Path, model: Path, images: np.ndarray, work: Path) -> Any:
    """face-api's own ``faceRecognitionNet`` on ``images``, through ``tests/js/recognition.js``."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot run face-api's JavaScript as the reference")
    for module in ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm"):
        if not (JS_DIR / "node_modules" / module / "package.json").is_file():
            pytest.skip(f"{module} is not installed: run `npm ci --prefix tests/js` first")
    images.astype("<f4").tofile(work / "images.f32")
    result = subprocess.run(
        [
            node,
            str(JS_DIR / "recognition.js"),
            *("--package", str(package), "--model", str(model)),
            *("--input", str(work / "images.f32"), "--count", str(len(images))),
            *("--output", str(work / "descriptors.f32")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return np.fromfile(work / "descriptors.f32", "<f4").reshape(len(images), DESCRIPTOR_DIM)


@pytest.fixture(scope="session")
def face_api_reference(
    pretrained_settings: Settings,
    package_files: Path,
    reference_images: np.ndarray,
    tmp_path_factory: pytest.TempPathFactory,
) -> np.ndarray:
    return javascript_descriptors(
        package_files,
        package_model_dir(pretrained_settings),
        reference_images,
        tmp_path_factory.mktemp("js"),
    )


def max_difference(model: keras.Model, images: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(model(images).numpy() - reference).max())


def test_the_package_weights_are_what_the_network_needs(pretrained_settings: Settings) -> None:
    folder = package_model_dir(pretrained_settings)
    manifest = json.loads((folder / RECOGNITION_MANIFEST).read_text(encoding="utf-8"))
    specs = manifest[0]["weights"]
    plain = sorted(s["name"] for s in specs if "quantization" not in s)
    assert len(specs) == 117
    assert len(plain) == 8
    assert all(name.startswith("conv64_") and name.endswith("/filters") for name in plain)
    assert (folder / "face_recognition_model.bin").stat().st_size == 6_444_032
    weights = read_tfjs_weights(folder / RECOGNITION_MANIFEST)
    assert sum(w.size for w in weights.values()) == RECOGNITION_PARAMS
    # The other networks of the package read too (the landmark port uses this reader).
    for other in folder.glob("*-weights_manifest.json"):
        assert read_tfjs_weights(other)


def test_port_matches_face_api_javascript(
    pretrained_net: keras.Model, reference_images: np.ndarray, face_api_reference: np.ndarray
) -> None:
    assert np.abs(face_api_reference).max() > 0.05  # a real descriptor, not zeros
    assert max_difference(pretrained_net, reference_images, face_api_reference) <= TOLERANCE


def _divide_by_256(model: keras.Model, images: np.ndarray) -> Any:
    """The net fed ``mean + (x - mean) * 255/256``: it then computes ``(x - mean) / 256``."""
    mean = np.array(MEAN_RGB, np.float32)
    return model(mean + (images - mean) * np.float32(255 / 256))


def _pad_top_left(model: keras.Model, images: np.ndarray) -> Any:
    """The net with the down blocks' zero row and column at the top and left instead."""

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.ZeroPadding2D):
            ((_, bottom), (_, right)) = layer.padding
            return keras.layers.ZeroPadding2D(((bottom, 0), (right, 0)), name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    moved = keras.models.clone_model(model, clone_function=clone)
    moved.set_weights(model.get_weights())
    return moved(images)


def _one_quantisation_step(model: keras.Model, images: np.ndarray) -> Any:
    """The net with one value of one folded-BN scale off by one uint8 step of its tensor (the
    smallest gap between its distinct values): what an off-by-one in dequantising would do."""
    layer = model.get_layer("stage128_1_conv2_scale")
    original = layer.scale.numpy()
    changed = original.copy()
    changed[0] += np.diff(np.unique(original)).min()
    layer.scale.assign(changed)
    try:
        return model(images)
    finally:
        layer.scale.assign(original)


@pytest.mark.parametrize(
    "perturbed",
    [_divide_by_256, _pad_top_left, _one_quantisation_step],
    ids=["divide-by-256", "pad-top-left", "one-quantisation-step"],
)
def test_the_check_fails_for_a_perturbed_port(
    pretrained_net: keras.Model,
    reference_images: np.ndarray,
    face_api_reference: np.ndarray,
    perturbed: Callable[[keras.Model, np.ndarray], Any],
) -> None:
    difference = np.abs(
        np.asarray(perturbed(pretrained_net, reference_images)) - face_api_reference
    )
    assert difference.max() > TOLERANCE
    assert max_difference(pretrained_net, reference_images, face_api_reference) <= TOLERANCE


def test_the_export_embeds_like_face_api_but_unit_length(
    pretrained_settings: Settings, reference_images: np.ndarray, face_api_reference: np.ndarray
) -> None:
    embedder = load_embedder(str(pretrained_model_dir(pretrained_settings)))
    assert embedder.model_version == PRETRAINED_VERSION
    assert embedder.chip == DLIB_CHIP_150
    assert embedder.dim == DESCRIPTOR_DIM
    vectors = embedder.embed(reference_images.astype(np.uint8))
    expected = face_api_reference / np.linalg.norm(face_api_reference, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=TOLERANCE)


def test_same_person_embeds_closer_than_different_people(
    pretrained_settings: Settings, package_files: Path, astronaut: np.ndarray
) -> None:
    """Re-shots of the astronaut (rotated, shifted, re-exposed, noisy; each detected and aligned
    anew) stay closer to each other than to any face in face-api's group photos."""
    detector = HaarFaceDetector()
    rng = np.random.default_rng(11)
    shots = [astronaut, *(variant(astronaut, rng) for _ in range(3))]
    same = [align_face(s, detector.detect(s)[0], DLIB_CHIP_150).chip for s in shots]
    others = []
    for photo in sorted((package_files / "demo").glob("sample*.jpg")):
        pixels = read_image_file(photo).pixels
        others += [align_face(pixels, d, DLIB_CHIP_150).chip for d in detector.detect(pixels)]
    assert len(others) >= 10
    embedder = load_embedder(str(pretrained_model_dir(pretrained_settings)))
    mine, theirs = embedder.embed(np.stack(same)), embedder.embed(np.stack(others))
    within = np.linalg.norm(mine[:, None] - mine[None], axis=-1).max()
    between = np.linalg.norm(mine[:, None] - theirs[None], axis=-1).min()
    assert within < 0.25 < between, (within, between)


def test_ensure_pretrained_is_idempotent_and_offline(
    pretrained_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = pretrained_model_dir(pretrained_settings)
    stamp = (model_dir / "saved_model.pb").stat().st_mtime_ns
    steps: list[tuple[int, int, str]] = []
    monkeypatch.setenv("PATH", "")  # no npm: everything must come from the cache
    assert ensure_pretrained(pretrained_settings, progress=lambda *s: steps.append(s)) == model_dir
    assert steps == [(len(STEPS), len(STEPS), "already converted")]
    assert (model_dir / "saved_model.pb").stat().st_mtime_ns == stamp


def test_lost_package_weights_are_extracted_again_without_reconverting(
    pretrained_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights_dir = package_model_dir(pretrained_settings)
    model_dir = pretrained_model_dir(pretrained_settings)
    stamp = (model_dir / "saved_model.pb").stat().st_mtime_ns
    shutil.rmtree(weights_dir)
    steps: list[str] = []
    monkeypatch.setenv("PATH", "")
    ensure_pretrained(pretrained_settings, progress=lambda _d, _t, step: steps.append(step))
    assert steps == ["fetch package", "extract weights", "done"]
    assert (weights_dir / RECOGNITION_MANIFEST).is_file()
    assert (model_dir / "saved_model.pb").stat().st_mtime_ns == stamp


def test_models_fetch_prints_where_the_model_is(
    pretrained_settings: Settings, tmp_path: Path
) -> None:
    # A copy: `models fetch` also converts the SSD into the cache it is given, and the
    # session's pretrained cache must stay without it (its tests detect with Haar).
    settings = Settings.from_env({}, cache_dir=tmp_path / "cache")
    shutil.copytree(pretrained_settings.cache_dir, settings.cache_dir)
    result = run_facerank(
        "models",
        "fetch",
        "--json",
        data_dir=tmp_path / "data",
        env={"FACERANK_CACHE_DIR": str(settings.cache_dir), "PATH": ""},
    )
    info = json.loads(result.stdout)
    assert info["version"] == PRETRAINED_VERSION
    assert info["model_dir"] == str(pretrained_model_dir(settings))
    assert info["package_model_dir"] == str(package_model_dir(settings))
    assert info["dim"] == DESCRIPTOR_DIM
    assert info["chip"] == DLIB_CHIP_150.to_json()


# --- failures that need no package -------------------------------------------------------


def test_models_fetch_without_npm_says_why_and_what_happens_instead(tmp_path: Path) -> None:
    result = run_facerank(
        "models",
        "fetch",
        data_dir=tmp_path / "data",
        env={"FACERANK_CACHE_DIR": str(tmp_path / "cache"), "PATH": ""},
        check=False,
    )
    assert result.returncode == 2
    assert "package_unavailable" in result.stderr
    assert "npm command is not installed" in result.stderr
    assert "lbp-v0" in result.stderr
    assert not pretrained_model_dir(Settings.from_env({}, cache_dir=tmp_path / "cache")).exists()


def test_something_else_in_the_model_directory_is_not_overwritten(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    foreign = pretrained_model_dir(settings)
    foreign.mkdir(parents=True)
    card = ModelCard(version="other-v1", chip=DLIB_CHIP_150, dim=DESCRIPTOR_DIM)
    (foreign / CARD_NAME).write_text(json.dumps(card.to_json()), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="holds model 'other-v1'"):
        ensure_pretrained(settings)
    assert os.listdir(foreign) == [CARD_NAME]
