"""From a model version to its files, and from ``FACERANK_MODEL`` to the version to start with.

Exported models live in model folders by version name: ``shared_dir/models/<version>`` (what
training exports and promotion installs, on the volume every component mounts) and
``cache_dir/models/<version>`` (what setup converts, e.g. the pretrained descriptor). A
version is found by the same name in every process, so the pointer only has to name it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from facerank.embedding import (
    BUILTIN_EMBEDDERS,
    LBP_VERSION,
    Embedder,
    load_embedder,
    model_version_of,
)
from facerank.embedding.base import VERSION_PATTERN
from facerank.embedding.savedmodel import CARD_NAME
from facerank.errors import ModelLoadError
from facerank.registry.pointer import ModelRef
from facerank.settings import Settings

log = logging.getLogger(__name__)

AUTO = "auto"
"""``FACERANK_MODEL=auto``: the pretrained descriptor when setup converted it, else lbp-v0."""
FALLBACK = LBP_VERSION


def installed_models_dir(settings: Settings) -> Path:
    """Where promoted models are installed: on the shared volume, which every component
    mounts (the cache is one machine's)."""
    return settings.shared_dir / "models"


def model_folders(settings: Settings) -> tuple[Path, ...]:
    """Where exported models are looked up by version, first match wins."""
    return (installed_models_dir(settings), settings.cache_dir / "models")


def find_model_dir(version: str, settings: Settings) -> Path | None:
    """The exported model folder of ``version``; None if no model folder holds it."""
    if not VERSION_PATTERN.fullmatch(version):
        return None  # a path, not a version name
    for folder in model_folders(settings):
        candidate = folder / version
        if (candidate / CARD_NAME).is_file():
            return candidate
    return None


def embedder_name(ref: ModelRef, settings: Settings) -> str:
    """What :func:`facerank.embedding.load_embedder` takes for ``ref``."""
    if ref.version in BUILTIN_EMBEDDERS and ref.path is None:
        return ref.version
    if ref.path is not None:
        return str(ref.path)
    found = find_model_dir(ref.version, settings)
    if found is None:
        folders = ", ".join(str(f) for f in model_folders(settings))
        raise ModelLoadError(f"model {ref.version!r} is in none of the model folders ({folders})")
    return str(found)


def load_model(ref: ModelRef, settings: Settings) -> Embedder:
    embedder = load_embedder(embedder_name(ref, settings))
    if embedder.model_version != ref.version:
        raise ModelLoadError(
            f"the model found for {ref.version!r} reports version {embedder.model_version!r}"
        )
    return embedder


def default_model(settings: Settings) -> ModelRef:
    """The model ``FACERANK_MODEL`` names."""
    return model_ref(settings.model, settings)


def model_ref(name: str, settings: Settings) -> ModelRef:
    """A model named as ``FACERANK_MODEL`` accepts: a built-in, a version in the model
    folders, the path of an exported model, or ``auto``."""
    if name == AUTO:
        return _auto(settings)
    if name in BUILTIN_EMBEDDERS:
        return ModelRef(name)
    if find_model_dir(name, settings) is not None:
        return ModelRef(name)
    path = Path(name).expanduser()
    return ModelRef(model_version_of(str(path)), path.resolve())


def _auto(settings: Settings) -> ModelRef:
    from facerank.descriptor.pretrained import PRETRAINED_VERSION

    if find_model_dir(PRETRAINED_VERSION, settings) is not None:
        return ModelRef(PRETRAINED_VERSION)
    log.warning(
        "the pretrained face descriptor %s is not set up (run `facerank models fetch`); "
        "using the classical %s embedder, which is far less accurate",
        PRETRAINED_VERSION,
        FALLBACK,
    )
    return ModelRef(FALLBACK)
