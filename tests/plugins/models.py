"""Small real models for tests: a Keras network exported in facerank's SavedModel format."""

from __future__ import annotations

from pathlib import Path

from facerank.embedding.savedmodel import ModelCard, export_embedder
from facerank.faces.align import ChipSpec


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
