"""Keras port of face-api's ``faceLandmark68Net`` and its export as a SavedModel.

Why a port: the 68-point landmark net of ``@vladmandic/face-api`` is small (360k parameters,
a few milliseconds a face on a CPU) and its weights ship in the same npm package as the face
descriptor, so landmark alignment costs no extra download. facerank serves TensorFlow
SavedModels from Python, so the graph is rebuilt here layer for layer from the package's
TypeScript (``src/faceFeatureExtractor/`` and ``src/faceLandmarkNet/``) and fed the published
weights; ``tests/test_landmarks.py`` checks it against the package's own JavaScript.

The graph: 112x112 RGB in 0..255, minus the mean colour, divided by 255; four "dense blocks"
(a strided convolution, then three separable convolutions each fed the ReLU of the running
sum of all earlier outputs of the block) widening 32 -> 64 -> 128 -> 256 channels and halving
the resolution to 7x7; a 7x7 average pool; one fully connected layer to 136 values, the 68
``(x, y)`` points as fractions of the (square, padded) 112 px input.

TensorFlow and Keras are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facerank.descriptor.export import ensure_net
from facerank.descriptor.tfjs import check_weight_shapes
from facerank.faces.landmarks import LANDMARK_INPUT_SIZE, LANDMARK_MODEL_NAME, OUTPUT_NAME
from facerank.faces.netserve import INPUT_NAME

if TYPE_CHECKING:
    import keras

    from facerank.settings import Settings

MANIFEST_NAME = "face_landmark_68_model-weights_manifest.json"
"""The TF.js weight manifest of ``faceLandmark68Net`` in the package's ``model/`` folder."""

MEAN_RGB = (122.782, 117.001, 104.298)
"""Subtracted before the division by 255 (``FaceFeatureExtractor.forwardInput``)."""

BLOCKS = (("dense0", 32), ("dense1", 64), ("dense2", 128), ("dense3", 256))
"""``denseBlock4`` stages: weight-name prefix and output channels; each halves the size."""

CONVS_PER_BLOCK = 4
POOL_SIZE = 7
"""``avgPool([7, 7], [2, 2], 'valid')`` over the last block's 7x7 map: a global average."""


def expected_weight_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor name of the landmark manifest and its shape, derived from the graph.

    Derived rather than listed so the graph below and the weights it accepts cannot disagree.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    channels_in = 3
    for prefix, channels in BLOCKS:
        for index in range(CONVS_PER_BLOCK):
            name = f"{prefix}/conv{index}"
            source = channels_in if index == 0 else channels
            if prefix == BLOCKS[0][0] and index == 0:
                shapes[f"{name}/filters"] = (3, 3, source, channels)
            else:
                shapes[f"{name}/depthwise_filter"] = (3, 3, source, 1)
                shapes[f"{name}/pointwise_filter"] = (1, 1, source, channels)
            shapes[f"{name}/bias"] = (channels,)
        channels_in = channels
    shapes["fc/weights"] = (channels_in, 136)
    shapes["fc/bias"] = (136,)
    return shapes


def check_weights(weights: Mapping[str, np.ndarray]) -> None:
    """Refuse a weight map that is not exactly the landmark net's, naming what is wrong."""
    check_weight_shapes(weights, expected_weight_shapes(), network="faceLandmark68Net")


def build_landmark_net(weights: Mapping[str, np.ndarray]) -> keras.Model:
    """The Keras ``faceLandmark68Net`` with ``weights`` (TF.js tensor name -> array) loaded.

    Input: ``(N, 112, 112, 3)`` float32 RGB in 0..255, already squared and resized as
    :func:`facerank.faces.landmarks.net_input` does. Output: ``(N, 136)``, interleaved
    ``x0, y0, x1, y1, ...`` as fractions of that input. Raises :class:`ModelLoadError` when
    ``weights`` lacks a tensor, has an extra one, or one of the wrong shape.
    """
    import keras

    check_weights(weights)
    images = keras.Input((LANDMARK_INPUT_SIZE, LANDMARK_INPUT_SIZE, 3), name=INPUT_NAME)
    # (x - mean) / sqrt(255^2): the same subtraction and division as face-api, to the bit.
    normalize = keras.layers.Normalization(mean=MEAN_RGB, variance=[255.0**2] * 3, name="norm")
    x = normalize(images)
    for prefix, channels in BLOCKS:
        x = _dense_block(x, prefix, channels, first=prefix == BLOCKS[0][0])
    x = keras.layers.AveragePooling2D(POOL_SIZE, strides=2, padding="valid", name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    points = keras.layers.Dense(136, name="fc")(x)
    model = keras.Model(images, points, name="face_landmark_68")
    _load_weights(model, weights)
    return model


def _dense_block(x: Any, prefix: str, channels: int, *, first: bool) -> Any:
    """``denseBlock4`` of ``denseBlock.ts``: each conv sees the ReLU of all earlier sums.

    The additions keep the TypeScript's association (``out1 + (out2 + (out3 + out4))``), so
    float rounding matches it too.
    """
    import keras

    def conv(name: str, strides: int) -> Any:
        if first and name.endswith("conv0"):
            return keras.layers.Conv2D(channels, 3, strides=strides, padding="same", name=name)
        return keras.layers.SeparableConv2D(channels, 3, strides=strides, padding="same", name=name)

    def relu(tensor: Any) -> Any:
        return keras.layers.ReLU()(tensor)

    add = keras.layers.Add
    out1 = relu(conv(f"{prefix}_conv0", 2)(x))
    out2 = conv(f"{prefix}_conv1", 1)(out1)
    out3 = conv(f"{prefix}_conv2", 1)(relu(add()([out1, out2])))
    out4 = conv(f"{prefix}_conv3", 1)(relu(add()([out1, add()([out2, out3])])))
    return relu(add()([out1, add()([out2, add()([out3, out4])])]))


def _load_weights(model: keras.Model, weights: Mapping[str, np.ndarray]) -> None:
    """Copy TF.js tensors into the layers; Keras stores them in the same layouts."""
    suffixes = {
        "Conv2D": ("filters", "bias"),
        "SeparableConv2D": ("depthwise_filter", "pointwise_filter", "bias"),
        "Dense": ("weights", "bias"),
    }
    for layer in model.layers:
        names = suffixes.get(type(layer).__name__)
        if names is None:
            continue
        prefix = layer.name.replace("_", "/")
        layer.set_weights([np.asarray(weights[f"{prefix}/{n}"], np.float32) for n in names])


def landmark_model_dir(settings: Settings) -> Path:
    """Where :func:`ensure_landmark_model` keeps the export: re-creatable, so in the cache."""
    return settings.cache_dir / "models" / LANDMARK_MODEL_NAME


def ensure_landmark_model(settings: Settings) -> Path:
    """The landmark SavedModel in ``settings.cache_dir/models/landmarks68-v1``, made if absent
    (:func:`ensure_net`). Its signature: ``images`` ``(N, 112, 112, 3)`` float32 -> ``points``
    ``(N, 136)``."""
    return ensure_net(
        settings,
        landmark_model_dir(settings),
        MANIFEST_NAME,
        build_landmark_net,
        size=LANDMARK_INPUT_SIZE,
        output=OUTPUT_NAME,
    )
