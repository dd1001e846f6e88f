"""The exported-model contract: a small Keras model exported, loaded and served by signature."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facerank.embedding import load_embedder
from facerank.embedding.savedmodel import CARD_NAME, SavedModelEmbedder, export_embedder
from facerank.errors import ChipShapeError, ModelLoadError
from facerank.faces import ARCFACE_CHIP_112, DLIB_CHIP_150

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")


def tiny_model(size: int) -> keras.Model:
    keras.utils.set_random_seed(7)
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 5, strides=4, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(16),
        ]
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keras.Model]:
    model = tiny_model(DLIB_CHIP_150.size)
    directory = tmp_path_factory.mktemp("models") / "tiny-1"
    export_embedder(model, directory, version="tiny-1", chip=DLIB_CHIP_150)
    return directory, model


def test_exported_model_embeds_like_the_keras_model(exported: tuple[Path, keras.Model]) -> None:
    directory, model = exported
    embedder = SavedModelEmbedder(directory, batch_size=4)
    chips = np.random.default_rng(1).integers(0, 256, (10, 150, 150, 3), dtype=np.uint8)
    vectors = embedder.embed(chips)  # 10 chips in batches of 4: exercises the remainder batch
    expected = model(chips.astype(np.float32)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert embedder.model_version == "tiny-1"
    assert embedder.chip == DLIB_CHIP_150
    assert embedder.dim == 16
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_load_embedder_accepts_a_model_directory(exported: tuple[Path, keras.Model]) -> None:
    directory, _ = exported
    assert load_embedder(str(directory)).model_version == "tiny-1"


def test_wrong_chip_size_is_refused(exported: tuple[Path, keras.Model]) -> None:
    embedder = SavedModelEmbedder(exported[0])
    with pytest.raises(ChipShapeError):
        embedder.embed(np.zeros((1, 112, 112, 3), np.uint8))


def test_export_is_atomic_and_versions_are_immutable(exported: tuple[Path, keras.Model]) -> None:
    directory, model = exported
    with pytest.raises(FileExistsError):
        export_embedder(model, directory, version="tiny-1", chip=DLIB_CHIP_150)
    leftovers = [p.name for p in directory.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_directory_without_card_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="missing"):
        SavedModelEmbedder(tmp_path)


def test_card_that_disagrees_with_the_graph_is_refused(
    exported: tuple[Path, keras.Model], tmp_path: Path
) -> None:
    """A card claiming another chip size must fail at load time, not on the first request."""
    import shutil

    copy = tmp_path / "lying"
    shutil.copytree(exported[0], copy)
    card = json.loads((copy / CARD_NAME).read_text())
    card["chip"] = ARCFACE_CHIP_112.to_json()
    (copy / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="signature input"):
        SavedModelEmbedder(copy)


@pytest.mark.parametrize("version", ["", "../evil", "a b", "x" * 65])
def test_unsafe_versions_are_refused(tmp_path: Path, version: str) -> None:
    with pytest.raises(ModelLoadError, match="invalid model version"):
        export_embedder(tiny_model(112), tmp_path / "m", version=version, chip=ARCFACE_CHIP_112)
