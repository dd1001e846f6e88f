"""Embedders: aligned face chips -> unit vectors tagged with a model version."""

from __future__ import annotations

from pathlib import Path

from facerank.embedding.base import Embedder, l2_normalize
from facerank.embedding.lbp import LbpEmbedder
from facerank.errors import ModelLoadError

BUILTIN_EMBEDDERS = ("lbp-v0",)

__all__ = ["BUILTIN_EMBEDDERS", "Embedder", "LbpEmbedder", "l2_normalize", "load_embedder"]


def load_embedder(name: str) -> Embedder:
    """Resolve ``FACERANK_MODEL``: a built-in name, or the path of an exported model directory.

    The SavedModel embedder (and with it TensorFlow) is imported only when a path is given.
    """
    if name == "lbp-v0":
        return LbpEmbedder()
    path = Path(name).expanduser()
    if path.is_dir():
        from facerank.embedding.savedmodel import SavedModelEmbedder

        return SavedModelEmbedder(path)
    raise ModelLoadError(
        f"unknown model {name!r}: expected one of {', '.join(BUILTIN_EMBEDDERS)} "
        "or the path of an exported facerank model directory"
    )
