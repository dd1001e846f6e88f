"""Keras port of face-api's ``ssdMobilenetv1`` face detector and its export as a SavedModel.

Why a port: Haar misses about one LFW face in forty and most turned heads; face-api's SSD
(MobileNet v1 trained on WIDER FACE, 5.6 MB of MIT-licensed weights in the same npm package as
the descriptor) finds them, at a cost a CPU can pay per photo. facerank serves TensorFlow
SavedModels from Python, so the graph is rebuilt here layer for layer from the package's
TypeScript (``src/ssdMobilenetv1/``) and fed the published weights;
``tests/test_ssd.py`` checks it against the package's own JavaScript.

The graph: a 512x512 RGB input in 0..255 mapped to -1..1 (``x / 127.5 - 1``); MobileNet v1 (a
3x3/2 convolution, then 13 depthwise (batch norm, ReLU6) + pointwise (bias, ReLU6) pairs,
strided at 2, 4, 6 and 12, 32 -> 1024 channels at 16x16); four more pointwise pairs down to
1x1; six box predictors (1x1 convolutions) on the 32x32 map of pair 11 (3 anchors a cell) and
the 16, 8, 4, 2, 1 px maps (6 anchors), 5,118 anchors in all. Each anchor's encoding is
decoded against its prior box (``Output/extra_dim``) as face-api's ``outputLayer`` does: centre
moved by ``t / 10`` of the prior's size, size scaled by ``exp(t / 5)``; its score is the
sigmoid of the face logit. Non-maximum suppression and the mapping back to image pixels run
outside the graph (:mod:`facerank.faces.ssd`), as in face-api.

TensorFlow and Keras are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facerank.descriptor.export import ensure_net
from facerank.descriptor.tfjs import check_weight_shapes
from facerank.faces.netserve import INPUT_NAME
from facerank.faces.ssd import ANCHORS, BOXES_NAME, SCORES_NAME, SSD_INPUT_SIZE, SSD_MODEL_NAME

if TYPE_CHECKING:
    import keras

    from facerank.settings import Settings

MANIFEST_NAME = "ssd_mobilenetv1_model-weights_manifest.json"
"""The TF.js weight manifest of ``ssdMobilenetv1`` in the package's ``model/`` folder."""

BATCH_NORM_EPSILON = 0.0010000000474974513
"""``mobileNetV1.ts``: the float32 0.001 of the original TensorFlow graph."""

MOBILENET = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
"""Pairs 1..13: pointwise output channels and the depthwise stride (``getStridesForLayerIdx``)."""

PREDICTION = ((256, 1, 1), (512, 3, 2), (128, 1, 1), (256, 3, 2), (128, 1, 1), (256, 3, 2))
PREDICTION += ((64, 1, 1), (128, 3, 2))
"""``predictionLayer`` convs 0..7: channels, kernel, stride."""

PREDICTOR_SOURCES = ("conv11", "backbone", "prediction1", "prediction3", "prediction5")
PREDICTOR_SOURCES += ("prediction7",)
"""The map each box predictor 0..5 reads: pair 11, pair 13, then prediction convs 1, 3, 5, 7."""

UNUSED_CONSTANTS = frozenset(
    {
        "Prediction/BoxPredictor_0/stack/3",
        "Prediction/BoxPredictor_0/stack_1/2",
        "Postprocessor/Slice/begin",
        "Postprocessor/Slice/size",
        "Preprocessor/mul/x",
        "Preprocessor/ResizeImage/size",
        "Preprocessor/sub/y",
        "concat_1/axis",
        "Prediction/BoxPredictor_0/strided_slice/stack",
        "Prediction/BoxPredictor_0/strided_slice/stack_1",
        "Postprocessor/stack/1",
        *(f"Prediction/BoxPredictor_{i}/stack_1/1" for i in range(6)),
    }
)
"""Constants of the original TensorFlow graph the manifest also holds; face-api disposes of them
(``disposeUnusedWeightTensors``) and so does the port."""


def expected_weight_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor the detector uses and its shape, derived from the graph description above."""
    shapes: dict[str, tuple[int, ...]] = {}

    def pointwise(prefix: str, kernel: int, source: int, channels: int) -> None:
        shapes[f"{prefix}/weights"] = (kernel, kernel, source, channels)
        shapes[f"{prefix}/convolution_bn_offset"] = (channels,)

    pointwise("MobilenetV1/Conv2d_0_pointwise", 3, 3, 32)
    channels_in = 32
    for index, (channels, _stride) in enumerate(MOBILENET, start=1):
        depthwise = f"MobilenetV1/Conv2d_{index}_depthwise"
        shapes[f"{depthwise}/depthwise_weights"] = (3, 3, channels_in, 1)
        for name in ("gamma", "beta", "moving_mean", "moving_variance"):
            shapes[f"{depthwise}/BatchNorm/{name}"] = (channels_in,)
        pointwise(f"MobilenetV1/Conv2d_{index}_pointwise", 1, channels_in, channels)
        channels_in = channels
    widths = {"conv11": MOBILENET[10][0], "backbone": channels_in}
    for index, (channels, kernel, _stride) in enumerate(PREDICTION):
        pointwise(f"Prediction/Conv2d_{index}_pointwise", kernel, channels_in, channels)
        widths[f"prediction{index}"] = channels
        channels_in = channels
    for index, source in enumerate(PREDICTOR_SOURCES):
        anchors = 3 if index == 0 else 6
        for head, per_anchor in (("BoxEncodingPredictor", 4), ("ClassPredictor", 3)):
            prefix = f"Prediction/BoxPredictor_{index}/{head}"
            shapes[f"{prefix}/weights"] = (1, 1, widths[source], anchors * per_anchor)
            shapes[f"{prefix}/biases"] = (anchors * per_anchor,)
    shapes["Output/extra_dim"] = (1, ANCHORS, 4)
    return shapes


def check_weights(weights: Mapping[str, np.ndarray]) -> None:
    """Refuse a weight map that is not the detector's (graph constants aside), naming why."""
    check_weight_shapes(
        weights, expected_weight_shapes(), network="ssdMobilenetv1", unused=UNUSED_CONSTANTS
    )


def build_ssd_net(weights: Mapping[str, np.ndarray]) -> keras.Model:
    """The Keras ``ssdMobilenetv1`` with ``weights`` (TF.js tensor name -> array) loaded.

    Input: ``(N, 512, 512, 3)`` float32 RGB in 0..255, already padded and resized as
    :func:`facerank.faces.ssd.ssd_input` does. Outputs: ``boxes`` ``(N, 5118, 4)`` as
    ``ymin, xmin, ymax, xmax`` fractions of that input, and ``scores`` ``(N, 5118)``. Raises
    :class:`ModelLoadError` when ``weights`` lacks a tensor, has a foreign one, or one of the
    wrong shape.
    """
    import keras

    check_weights(weights)
    layers = keras.layers
    images = keras.Input((SSD_INPUT_SIZE, SSD_INPUT_SIZE, 3), name=INPUT_NAME)
    # (x - 127.5) / 127.5: face-api's x / 127.5 - 1 up to float rounding.
    x = layers.Normalization(mean=127.5, variance=127.5**2, name="normalize")(images)
    x = _pointwise(x, "MobilenetV1/Conv2d_0_pointwise", 32, kernel=3, strides=2)
    maps: dict[str, Any] = {}
    for index, (channels, stride) in enumerate(MOBILENET, start=1):
        name = f"MobilenetV1/Conv2d_{index}"
        x = layers.DepthwiseConv2D(
            3, strides=stride, padding="same", use_bias=False, name=_keras(f"{name}_depthwise")
        )(x)
        x = layers.BatchNormalization(
            epsilon=BATCH_NORM_EPSILON, name=_keras(f"{name}_depthwise/BatchNorm")
        )(x)
        x = layers.ReLU(6.0)(x)
        x = _pointwise(x, f"{name}_pointwise", channels, kernel=1, strides=1)
        if index == 11:
            maps["conv11"] = x
    maps["backbone"] = x
    for index, (channels, kernel, stride) in enumerate(PREDICTION):
        x = _pointwise(x, f"Prediction/Conv2d_{index}_pointwise", channels, kernel, stride)
        maps[f"prediction{index}"] = x
    encodings, logits = [], []
    for index, source in enumerate(PREDICTOR_SOURCES):
        anchors = 3 if index == 0 else 6
        prefix = f"Prediction/BoxPredictor_{index}"
        box = layers.Conv2D(anchors * 4, 1, name=_keras(f"{prefix}/BoxEncodingPredictor"))
        score = layers.Conv2D(anchors * 3, 1, name=_keras(f"{prefix}/ClassPredictor"))
        encodings.append(layers.Reshape((-1, 4))(box(maps[source])))
        logits.append(layers.Reshape((-1, 3))(score(maps[source])))
    boxes, scores = _decode(
        layers.Concatenate(axis=1)(encodings),
        layers.Concatenate(axis=1)(logits),
        np.asarray(weights["Output/extra_dim"], np.float32)[0],
    )
    model = keras.Model(images, {BOXES_NAME: boxes, SCORES_NAME: scores}, name="ssd_mobilenetv1")
    _load_weights(model, weights)
    return model


def _keras(tfjs_name: str) -> str:
    """A layer name from a TF.js prefix (Keras refuses ``/`` in names); reversible."""
    return tfjs_name.replace("/", "__")


def _pointwise(x: Any, prefix: str, channels: int, kernel: int, strides: int) -> Any:
    """``pointwiseConvLayer``: convolution ('same'), plus the folded batch-norm offset, ReLU6."""
    import keras

    conv = keras.layers.Conv2D(
        channels, kernel, strides=strides, padding="same", name=_keras(prefix)
    )
    return keras.layers.ReLU(6.0)(conv(x))


def _decode(encodings: Any, logits: Any, priors: np.ndarray) -> tuple[Any, Any]:
    """face-api's ``decodeBoxesLayer`` and score slice, against the fixed prior boxes.

    The arithmetic keeps the TypeScript's order of operations (``exp(t / 5) * size / 2``,
    ``t / 10 * size + centre``), so float rounding matches it too.
    """
    from keras import ops

    height = priors[:, 2] - priors[:, 0]
    width = priors[:, 3] - priors[:, 1]
    centre_y = priors[:, 0] + height / 2
    centre_x = priors[:, 1] + width / 2
    half_h = ops.exp(encodings[..., 2] / 5) * height / 2
    mid_y = encodings[..., 0] / 10 * height + centre_y
    half_w = ops.exp(encodings[..., 3] / 5) * width / 2
    mid_x = encodings[..., 1] / 10 * width + centre_x
    boxes = ops.stack([mid_y - half_h, mid_x - half_w, mid_y + half_h, mid_x + half_w], axis=-1)
    return boxes, ops.sigmoid(logits[..., 1])


def _load_weights(model: keras.Model, weights: Mapping[str, np.ndarray]) -> None:
    """Copy TF.js tensors into the layers; Keras stores them in the same layouts."""
    suffixes = {
        "Conv2D": ("weights", "biases"),
        "DepthwiseConv2D": ("depthwise_weights",),
        "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    }
    for layer in model.layers:
        names = suffixes.get(type(layer).__name__)
        if names is None:
            continue
        prefix = layer.name.replace("__", "/")
        if prefix.endswith("_pointwise"):
            names = ("weights", "convolution_bn_offset")
        layer.set_weights([np.asarray(weights[f"{prefix}/{n}"], np.float32) for n in names])


def ssd_model_dir(settings: Settings) -> Path:
    """Where :func:`ensure_ssd_model` keeps the export: re-creatable, so in the cache."""
    return settings.cache_dir / "models" / SSD_MODEL_NAME


def ensure_ssd_model(settings: Settings) -> Path:
    """The SSD SavedModel in ``settings.cache_dir/models/ssd-mobilenetv1-v1``, made if absent
    (:func:`ensure_net`). Its signature: ``images`` ``(N, 512, 512, 3)`` float32 -> ``boxes``
    ``(N, 5118, 4)`` and ``scores`` ``(N, 5118)``."""
    return ensure_net(
        settings, ssd_model_dir(settings), MANIFEST_NAME, build_ssd_net, size=SSD_INPUT_SIZE
    )
