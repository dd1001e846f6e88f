"""Embedders: aligned face chips -> unit vectors tagged with a model version.

Here an embedder is loaded from what names it directly: a built-in name or an exported model
directory. Which model a setting or the model pointer means (``auto``, a version name looked up
in the model folders) is :mod:`facerank.registry.locate`'s job, which ends up calling
:func:`load_embedder`.
"""

from __future__ import annotations

from pathlib import Path

from facerank.embedding.base import Embedder, l2_normalize
from facerank.embedding.lbp import LBP_VERSION, LbpEmbedder
from facerank.errors import ModelLoadError

BUILTIN_EMBEDDERS = (LBP_VERSION,)

__all__ = [
    "BUILTIN_EMBEDDERS",
    "LBP_VERSION",
    "Embedder",
    "LbpEmbedder",
    "l2_normalize",
    "load_embedder",
    "model_version_of",
]


def model_version_of(name: str) -> str:
    """The version ``load_embedder(name)`` would report, read without loading any weights.

    For an exported model only its card is read, so listing the gallery never imports TensorFlow.
    """
    if name in BUILTIN_EMBEDDERS:
        return name
    from facerank.embedding.savedmodel import ModelCard

    return ModelCard.read(_model_dir(name)).version


def _model_dir(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelLoadError(
            f"unknown model {name!r}: expected one of {', '.join(BUILTIN_EMBEDDERS)} "
            "or the path of an exported facerank model directory"
        )
    return path


def load_embedder(name: str) -> Embedder:
    """The embedder ``name`` names: a built-in name, or the path of an exported model directory.

    The SavedModel embedder (and with it TensorFlow) is imported only when a path is given.
    """
    if name == LBP_VERSION:
        return LbpEmbedder()
    from facerank.embedding.savedmodel import SavedModelEmbedder

    return SavedModelEmbedder(_model_dir(name))
