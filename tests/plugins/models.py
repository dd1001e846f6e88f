"""Small real models for tests: a Keras network exported in facerank's SavedModel format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerank.embedding import LbpEmbedder
from facerank.embedding.savedmodel import ModelCard, SavedModelEmbedder, export_embedder
from facerank.faces.align import ARCFACE_CHIP_112, ChipSpec
from facerank.pipeline import FacePipeline
from facerank.registry.locate import installed_models_dir
from facerank.settings import Settings
from tests.plugins.enroller import Enroller, lfw_photo
from tests.plugins.faces import encode, variant


def export_tiny_model(directory: Path, *, version: str, chip: ChipSpec, seed: int = 7) -> ModelCard:
    """A seeded conv + dense embedder (16-D) exported to ``directory``; imports TensorFlow."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((chip.size, chip.size, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 5, strides=4, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(16),
        ]
    )
    return export_embedder(model, directory, version=version, chip=chip)


@dataclass(frozen=True)
class SwitchScene:
    """A gallery enrolled with ``lbp-v0``, a second model in the shared model folder, and a
    query whose embedding by either version is known: what a model switch test needs."""

    settings: Settings
    enroller: Enroller
    new_model: SavedModelEmbedder
    query: bytes
    query_vectors: dict[str, np.ndarray]
    """The query's embedding by each version, to recompute every distance a reply gives."""


def switch_scene(
    data_dir: Path, astronaut: np.ndarray, lfw_faces: np.ndarray, *, new_version: str
) -> SwitchScene:
    """Five identities enrolled with lbp-v0 and ``new_version`` exported beside them."""
    settings = Settings(data_dir=data_dir, model="lbp-v0")
    enroller = Enroller(settings)
    enroller.add("astronaut/eileen.jpg", astronaut)
    for i in range(4):
        enroller.add(f"lfw-{i}/1.jpg", lfw_photo(lfw_faces, i))
    new_dir = installed_models_dir(settings) / new_version
    export_tiny_model(new_dir, version=new_version, chip=ARCFACE_CHIP_112)
    new_model = SavedModelEmbedder(new_dir)
    query = encode(variant(astronaut[:400, 60:460], np.random.default_rng(5)), "JPEG", quality=90)
    vectors = {}
    for embedder in (LbpEmbedder(), new_model):
        pipeline = FacePipeline.from_settings(settings, embedder)
        faces = pipeline.analyze(pipeline.decode(query).pixels).faces
        vectors[embedder.model_version] = pipeline.embed(faces)[0]
    return SwitchScene(settings, enroller, new_model, query, vectors)
