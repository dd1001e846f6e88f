"""facerank's exported-model format: a TensorFlow SavedModel plus a small JSON model card.

Layout of a model directory::

    saved_model.pb, variables/      tf.saved_model.save output, one signature "serving_default"
                                    taking float32 images (N, size, size, 3) in 0..255 RGB
                                    and returning {"embedding": (N, dim)}
    facerank-model.json             format, version, chip spec, embedding dim

Why a card beside the SavedModel: the chip layout and version must be known before TensorFlow
is imported (the CLI and the functions decide alignment from it), and a directory whose card is
missing is, by construction, an export that did not finish: :func:`export_embedder` writes
into a temporary sibling and renames it into place only when complete.

Serving goes through the signature's concrete function: no ``model.predict`` per request
(about 100 ms of Keras overhead each), no retracing (the batch dimension is ``None``).
TensorFlow is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerank.embedding.base import check_chips, l2_normalize, validate_model_version
from facerank.errors import ModelLoadError
from facerank.faces.align import ChipSpec
from facerank.files import atomic_folder

CARD_NAME = "facerank-model.json"
FORMAT = "facerank.savedmodel/v1"
SIGNATURE = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
DEFAULT_MATCH_THRESHOLD = 0.40
"""For a model exported without a calibrated threshold: FaceNet-style 128-D unit embeddings
separate people around here (dlib-r34-v1 measures FAR 1% at 0.40 on the AT&T faces); the
training gate writes the threshold it measured on held-out identities instead."""


@dataclass(frozen=True)
class ModelCard:
    """What facerank must know about an exported embedder without loading TensorFlow."""

    version: str
    chip: ChipSpec
    dim: int
    match_threshold: float = DEFAULT_MATCH_THRESHOLD
    """Calibrated by whoever exports the model (see :data:`DEFAULT_MATCH_THRESHOLD`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "chip": self.chip.to_json(),
            "dim": self.dim,
            "match_threshold": self.match_threshold,
            "signature": SIGNATURE,
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
        }

    @classmethod
    def read(cls, directory: Path) -> ModelCard:
        path = directory / CARD_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelLoadError(
                f"{directory} is not a facerank model: {CARD_NAME} is missing "
                "(an export that did not finish leaves none)"
            ) from None
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelLoadError(f"{path}: expected format {FORMAT!r}")
        try:
            return cls(
                version=validate_model_version(str(data["version"])),
                chip=ChipSpec.from_json(data["chip"]),
                dim=int(data["dim"]),
                match_threshold=_threshold(data.get("match_threshold", DEFAULT_MATCH_THRESHOLD)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelLoadError(f"{path}: malformed model card ({exc})") from None


def _threshold(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 2:
        raise ValueError(f"match_threshold must be a distance in (0, 2], not {value!r}")
    return float(value)


def export_embedder(
    model: Callable[[Any], Any],
    directory: str | os.PathLike[str],
    *,
    version: str,
    chip: ChipSpec,
    match_threshold: float = DEFAULT_MATCH_THRESHOLD,
) -> ModelCard:
    """Export ``model`` (images float32 0..255 -> embeddings) as a facerank model directory.

    ``model`` is any TensorFlow callable (a Keras model, a ``tf.Module``, or any object whose
    ``variables`` lists the variables it reads); its output is
    L2-normalised inside the exported graph so every consumer gets unit vectors. The export is
    atomic: it is assembled in a temporary folder next to ``directory`` and renamed into place.
    """
    import tensorflow as tf

    validate_model_version(version)
    target = Path(directory)
    if target.exists():
        raise FileExistsError(f"{target} already exists; model versions are immutable")
    spec = tf.TensorSpec([None, chip.size, chip.size, 3], tf.float32, name=INPUT_NAME)

    module = tf.Module()
    module.model = model
    # A plain Python callable (a converted TF.js graph, a combination of nets) is not tracked
    # by TensorFlow: its ``variables`` are attached here so the SavedModel stores them.
    module.model_variables = list(getattr(model, "variables", ()))

    @tf.function(input_signature=[spec])
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        embedding = tf.math.l2_normalize(tf.cast(model(images), tf.float32), axis=-1)
        return {OUTPUT_NAME: embedding}

    dim = int(serve.get_concrete_function().structured_outputs[OUTPUT_NAME].shape[-1])
    card = ModelCard(
        version=version, chip=chip, dim=dim, match_threshold=_threshold(match_threshold)
    )
    with atomic_folder(target) as staging:
        tf.saved_model.save(module, str(staging), signatures={SIGNATURE: serve})
        (staging / CARD_NAME).write_text(json.dumps(card.to_json(), indent=2), encoding="utf-8")
    return card


class SavedModelEmbedder:
    """Loads a facerank model directory and embeds through its serving signature."""

    def __init__(self, directory: str | os.PathLike[str], *, batch_size: int = 64) -> None:
        self.directory = Path(directory)
        self.card = ModelCard.read(self.directory)
        self.batch_size = batch_size
        # Keep the loaded object alive: its signature references the object's variables.
        self._loaded = _load_checked(self.directory, self.card)
        self._serve = self._loaded.signatures[SIGNATURE]

    @property
    def model_version(self) -> str:
        return self.card.version

    @property
    def chip(self) -> ChipSpec:
        return self.card.chip

    @property
    def dim(self) -> int:
        return self.card.dim

    @property
    def match_threshold(self) -> float:
        return self.card.match_threshold

    def embed(self, chips: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        check_chips(chips, self.card.chip)
        out = np.empty((len(chips), self.card.dim), dtype=np.float32)
        for start in range(0, len(chips), self.batch_size):
            batch = tf.convert_to_tensor(chips[start : start + self.batch_size], tf.float32)
            out[start : start + len(batch)] = self._serve(**{INPUT_NAME: batch})[OUTPUT_NAME]
        # The graph normalises already; normalising again guards against float drift.
        return l2_normalize(out)


def _load_checked(directory: Path, card: ModelCard) -> Any:
    """Load the SavedModel and check its signature matches the card before any request."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(directory))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise ModelLoadError(f"cannot load SavedModel from {directory}: {exc}") from None
    signature = loaded.signatures.get(SIGNATURE)
    if signature is None:
        raise ModelLoadError(f"{directory}: no {SIGNATURE!r} signature")
    inputs = signature.structured_input_signature[1]
    expected = [None, card.chip.size, card.chip.size, 3]
    if INPUT_NAME not in inputs or inputs[INPUT_NAME].shape.as_list() != expected:
        raise ModelLoadError(f"{directory}: signature input must be {INPUT_NAME}{expected}")
    outputs = signature.structured_outputs
    if OUTPUT_NAME not in outputs or outputs[OUTPUT_NAME].shape[-1] != card.dim:
        raise ModelLoadError(f"{directory}: signature output must be {OUTPUT_NAME}[N, {card.dim}]")
    return loaded
