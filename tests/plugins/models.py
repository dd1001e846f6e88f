"""Small real models for tests: a Keras network exported in facerank's SavedModel format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerank.embedding.savedmodel import ModelCard, SavedModelEmbedder, export_embedder
from facerank.faces.align import ARCFACE_CHIP_112, ChipSpec
from facerank.pipeline import FacePipeline
from facerank.registry import ModelRef
from facerank.registry.locate import installed_models_dir
from facerank.settings import Settings
from tests.plugins.enroller import Enroller, lfw_photo
from tests.plugins.faces import encode, variant
from tests.plugins.pretrained import FALLBACK, Served


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
    """A gallery enrolled with the served model, a second model in the shared model folder,
    and a query whose embedding by either version is known: what a model switch test needs."""

    settings: Settings
    enroller: Enroller
    new_model: SavedModelEmbedder
    query: bytes
    query_vectors: dict[str, np.ndarray]
    """The query's embedding by each version, to recompute every distance a reply gives."""
    old_version: str
    late_photo: np.ndarray
    """One more identity's photo, for an enrollment during the switch."""

    first: frozenset[str] = frozenset({"astronaut", *(f"other-{i}" for i in range(4))})
    """The identities enrolled before the switch."""


def switch_scene(
    data_dir: Path,
    astronaut: np.ndarray,
    lfw_faces: np.ndarray,
    *,
    new_version: str,
    served: Served = FALLBACK,
) -> SwitchScene:
    """Five identities enrolled with ``served``'s model and ``new_version`` exported beside them.

    On the fallback the other identities are LFW faces (Haar finds them); the SSD detector of
    the default finds few of those 25 px faces, so there they are re-shots of the astronaut:
    a switch test asks which version answered and with which gallery, not who is who.
    """
    settings = served.settings(data_dir, model=served.version)
    enroller = Enroller(settings)

    def photo(i: int) -> np.ndarray:
        if served is FALLBACK:
            return lfw_photo(lfw_faces, i)
        return variant(astronaut[:420, 40:480], np.random.default_rng(100 + i))

    enroller.add("astronaut/eileen.jpg", astronaut)
    for i in range(4):
        enroller.add(f"other-{i}/1.jpg", photo(i))
    new_dir = installed_models_dir(settings) / new_version
    export_tiny_model(new_dir, version=new_version, chip=ARCFACE_CHIP_112)
    new_model = SavedModelEmbedder(new_dir)
    query = encode(variant(astronaut[:400, 60:460], np.random.default_rng(5)), "JPEG", quality=90)
    vectors = {}
    for embedder in (enroller.handler.models.embedder(ModelRef(served.version)), new_model):
        pipeline = FacePipeline.from_settings(settings, embedder)
        faces = pipeline.analyze(pipeline.decode(query).pixels).faces
        vectors[embedder.model_version] = pipeline.embed(faces)[0]
    return SwitchScene(settings, enroller, new_model, query, vectors, served.version, photo(5))
