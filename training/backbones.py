"""The networks a run can fine-tune or train, each mapping 0..255 RGB chips to raw embeddings.

* ``pretrained`` (default): dlib's ResNet descriptor with face-api's weights, the network
  behind ``dlib-r34-v1``. Transfer learning keeps its early stages frozen (generic edge and
  texture filters that a few hundred faces cannot improve) and fine-tunes the later stages and
  the 128-D projection (``train_from``, default ``stage256``).
* ``scratch``: a small ResNet (four strided stages, about 1.2 M parameters) that trains on a
  CPU in minutes at 64-112 px; for tests, and for users without the pretrained package.
* ``imagenet``: MobileNetV2 with ImageNet weights under a new 128-D projection. The weights are
  downloaded by Keras on first use, so this backbone needs the internet once; offline it fails
  fast with :class:`BackboneUnavailableError` (every socket operation of the download is bounded
  by :data:`DOWNLOAD_TIMEOUT_S`), or trains ``scratch`` when the config's fallback says so.

Layer names follow the pretrained network's stages (:data:`facerank.descriptor.recognition.
STAGES`: ``stem``, ``stage32`` ... ``fc``) wherever a backbone has them, so one freeze policy
works for both ResNets. Keras is imported inside the builders: the retrain function imports
this module for :func:`backbone_chip` without paying for TensorFlow.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from facerank.faces.align import DLIB_CHIP_150, ChipSpec
from facerank.settings import Settings
from training.errors import BackboneUnavailableError, TrainingConfigError

if TYPE_CHECKING:
    import keras

    from training.config import TrainConfig

log = logging.getLogger(__name__)

NATIVE_SIZE = {"pretrained": 150, "scratch": 112, "imagenet": 128}
"""Chip size when the config sets none. MobileNetV2's ImageNet weights exist for 96, 128,
160, 192 and 224 px; 128 keeps a CPU step affordable."""
DEFAULT_TRAIN_FROM = {"pretrained": "stage256", "scratch": "stem", "imagenet": "fc"}
"""``train_from: auto``: see the module doc. ``stem`` trains every layer."""
IMAGENET_WEIGHTS = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5"
)
IMAGENET_SIZES = (96, 128, 160, 192, 224)
DOWNLOAD_TIMEOUT_S = 10.0
"""Longest wait for any one socket operation while fetching ImageNet weights."""


@dataclass(frozen=True)
class Backbone:
    """A built network and what it is: ``kind`` differs from the config's backbone when the
    configured one was unavailable and the fallback trained ``scratch`` instead."""

    model: keras.Model
    kind: str


def backbone_chip(config: TrainConfig) -> ChipSpec:
    """The chip layout a run's dataset is exported in: dlib's 150 px chip for the pretrained
    network, the same face framing scaled to ``image_size`` for the others (so a fallback from
    pretrained to scratch trains on the same chips)."""
    size = config.image_size or NATIVE_SIZE[config.backbone]
    return scaled_chip(DLIB_CHIP_150, size)


def scaled_chip(spec: ChipSpec, size: int) -> ChipSpec:
    """``spec``'s framing at another size: eye points scaled, the face covers the same share."""
    if size == spec.size:
        return spec
    ratio = size / spec.size
    return ChipSpec(
        size,
        (spec.left_eye[0] * ratio, spec.left_eye[1] * ratio),
        (spec.right_eye[0] * ratio, spec.right_eye[1] * ratio),
    )


def build_backbone(
    config: TrainConfig, chip: ChipSpec, settings: Settings, *, pretrained_weights: bool = True
) -> Backbone:
    """The network ``config`` asks for, taking ``chip``-sized input, with its freeze policy.

    ``pretrained_weights=False`` builds the same architecture without fetching or loading
    weights: the chief's export copy, which receives the trained weights right after.
    """
    kind = config.backbone
    try:
        model = _build(kind, config, chip, settings, pretrained_weights)
    except BackboneUnavailableError as exc:
        if config.backbone_fallback != "scratch":
            raise
        log.warning("%s; training the scratch backbone instead (backbone_fallback)", exc)
        kind = "scratch"
        model = _build(kind, config, chip, settings, pretrained_weights)
    train_from = DEFAULT_TRAIN_FROM[kind] if config.train_from == "auto" else config.train_from
    freeze_before(model, kind, train_from)
    return Backbone(model, kind)


def _build(
    kind: str, config: TrainConfig, chip: ChipSpec, settings: Settings, weights: bool
) -> keras.Model:
    if kind == "pretrained":
        if chip.size != NATIVE_SIZE["pretrained"]:
            raise TrainingConfigError(
                f"the pretrained backbone takes 150 px chips, not {chip.size}"
            )
        return _pretrained(settings, weights)
    if kind == "imagenet":
        return _imagenet(chip.size, config.embedding_dim, weights)
    return scratch_net(chip.size, config.embedding_dim)


def _pretrained(settings: Settings, weights: bool) -> keras.Model:
    from facerank.descriptor.pretrained import RECOGNITION_MANIFEST, package_model_dir
    from facerank.descriptor.recognition import build_recognition_net
    from facerank.descriptor.tfjs import read_tfjs_weights

    if not weights:
        return build_recognition_net()
    manifest = package_model_dir(settings) / RECOGNITION_MANIFEST
    if not manifest.is_file():
        raise BackboneUnavailableError(
            f"the pretrained backbone's weights are not at {manifest}: run "
            "`facerank models fetch` (needs npm once), or choose backbone scratch"
        )
    return build_recognition_net(read_tfjs_weights(manifest))


def scratch_net(size: int, dim: int) -> keras.Model:
    """A small ResNet: 3x3/2 stem (32), three strided residual stages (64, 128, 256), global
    average pooling, a ``dim`` projection. Input 0..255 RGB, rescaled to -1..1 inside."""
    import keras

    layers = keras.layers
    images = keras.Input((size, size, 3), dtype="float32", name="images")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="stem_rescale")(images)
    x = _conv_bn(x, 32, 3, 2, "stem")
    x = layers.ReLU(name="stem_relu")(x)
    for width in (64, 128, 256):
        name = f"stage{width}"
        shortcut = _conv_bn(x, width, 1, 2, f"{name}_shortcut")
        x = layers.ReLU(name=f"{name}_relu1")(_conv_bn(x, width, 3, 2, f"{name}_conv1"))
        x = _conv_bn(x, width, 3, 1, f"{name}_conv2")
        x = layers.ReLU(name=f"{name}_relu2")(layers.Add(name=f"{name}_add")([x, shortcut]))
    x = layers.GlobalAveragePooling2D(name="out256_mean")(x)
    return keras.Model(images, layers.Dense(dim, name="fc")(x), name="scratch_resnet")


def _conv_bn(x: Any, filters: int, kernel: int, strides: int, name: str) -> Any:
    import keras

    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    return keras.layers.BatchNormalization(name=f"{name}_bn")(x)


def _imagenet(size: int, dim: int, weights: bool) -> keras.Model:
    """MobileNetV2 (ImageNet weights) + a ``dim`` projection; the base is the layer
    ``imagenet_base`` (frozen unless ``train_from`` names a stage before ``fc``)."""
    import keras

    if size not in IMAGENET_SIZES:
        raise TrainingConfigError(
            f"ImageNet MobileNetV2 weights exist for {IMAGENET_SIZES} px, not {size}"
        )
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3),
        include_top=False,
        weights=_imagenet_weights(size) if weights else None,
        pooling="avg",
    )
    base.name = "imagenet_base"
    images = keras.Input((size, size, 3), dtype="float32", name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="stem_rescale")(images)
    x = base(x)
    return keras.Model(images, keras.layers.Dense(dim, name="fc")(x), name="imagenet_mobilenetv2")


def _imagenet_weights(size: int) -> str:
    """The local path of the ImageNet weights, downloaded by Keras if not cached yet.

    Keras' download sets no timeout; a machine without internet access (a firewalled cluster)
    could hang in it, so every socket operation is bounded while it runs.
    """
    import keras

    url = IMAGENET_WEIGHTS.format(size=size)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return keras.utils.get_file(url.rsplit("/", 1)[1], url, cache_subdir="models")
    except Exception as exc:  # get_file wraps every network failure in a bare Exception
        raise BackboneUnavailableError(
            f"cannot fetch the ImageNet weights ({url}): {exc}; this backbone needs the "
            "internet once, or choose backbone scratch / backbone_fallback scratch"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def freeze_before(model: keras.Model, kind: str, train_from: str) -> None:
    """Freeze the layers before stage ``train_from`` (see :data:`DEFAULT_TRAIN_FROM`)."""
    from facerank.descriptor.recognition import STAGES, set_trainable_from

    if train_from not in STAGES:
        raise TrainingConfigError(f"train_from must be auto or one of {', '.join(STAGES)}")
    if kind == "imagenet":
        model.get_layer("imagenet_base").trainable = train_from != "fc"
    else:
        set_trainable_from(model, train_from)
