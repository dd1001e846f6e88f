"""dlib's ResNet face descriptor (as face-api's ``faceRecognitionNet``) as a Keras model.

The network: a 7x7/2 stem and 3x3/2 max pool, residual stages of 32 (3 blocks), 64 (a down
block and 3), 128 (down and 2), 256 (down and 2) and a final 256 down block, a global mean,
and a 256->128 projection without bias. Every convolution is ``(conv(x) + b) * s + t``: dlib's
batch norm folded into a per-channel affine. The affine is kept as its own trainable layer
(:class:`ChannelAffine`) rather than folded into the kernel, so the TF.js weights load without
arithmetic of ours and fine-tuning can adapt it like the batch norm it came from.

A down block's shortcut is a 2x2/2 average pool whose channels are zero-padded to the block's
width. From 8x8 on the strided 3x3 conv yields one row and column fewer than that pool, and
face-api pads the conv branch with zeros at the bottom and right (top/left is wrong, and shows).

Layers are named by stage (:data:`STAGES`: ``stem``, ``stage32_1``, ..., ``stage64_down``,
..., ``out256``, ``fc``) so training can freeze early stages and fine-tune later ones
(:func:`set_trainable_from`). This module imports Keras at the top: import it only where a
network is built (conversion, training), never from the CLI's or the functions' start-up path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from facerank.descriptor.tfjs import TfjsWeightsError

INPUT_SIZE = 150
DESCRIPTOR_DIM = 128
MEAN_RGB = (122.782, 117.001, 104.298)
"""face-api subtracts this mean from 0..255 RGB and divides by 255 (not 256)."""

RECOGNITION_PARAMS = 5_614_592
"""Values in face-api's ``face_recognition_model`` weights, and parameters of this network."""

STAGES = ("stem", "stage32", "stage64", "stage128", "stage256", "out256", "fc")
"""Layer-name prefixes in network order (the normalisation layer, without weights, has none)."""


@dataclass(frozen=True)
class _Block:
    """One residual block: its TF.js weight prefix, our layer prefix, width and kind."""

    source: str
    name: str
    filters: int
    down: bool


def _stage(width: int, blocks: int, *, down: bool) -> tuple[_Block, ...]:
    first = (_Block(f"conv{width}_down", f"stage{width}_down", width, True),) if down else ()
    plain = tuple(
        _Block(f"conv{width}_{i}", f"stage{width}_{i}", width, False) for i in range(1, blocks + 1)
    )
    return first + plain


_BLOCKS = (
    *_stage(32, 3, down=False),
    *_stage(64, 3, down=True),
    *_stage(128, 2, down=True),
    *_stage(256, 2, down=True),
    _Block("conv256_down_out", "out256", 256, True),
)
_UNITS = {
    "stem_conv": "conv32_down",
    **{f"{b.name}_conv{k}": f"{b.source}/conv{k}" for b in _BLOCKS for k in (1, 2)},
}
"""Our convolution layer -> face-api's prefix of its ``conv`` and ``scale`` tensors."""


@keras.saving.register_keras_serializable(package="facerank")
class ChannelAffine(keras.layers.Layer):
    """``x * scale + offset`` per channel: a batch norm folded for inference, still trainable."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = input_shape[-1]
        self.scale = self.add_weight(name="scale", shape=(channels,), initializer="ones")
        self.offset = self.add_weight(name="offset", shape=(channels,), initializer="zeros")

    def call(self, inputs: Any) -> Any:
        return inputs * self.scale + self.offset


@keras.saving.register_keras_serializable(package="facerank")
class ZeroPadChannels(keras.layers.Layer):
    """Append zero channels up to ``channels``: the parameter-free widening of a shortcut."""

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = channels

    def call(self, inputs: Any) -> Any:
        extra = self.channels - inputs.shape[-1]
        return keras.ops.pad(inputs, [[0, 0], [0, 0], [0, 0], [0, extra]])

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], self.channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels}


def build_recognition_net(weights: Mapping[str, np.ndarray] | None = None) -> keras.Model:
    """The descriptor network: float32 ``(N, 150, 150, 3)`` RGB in 0..255 -> raw ``(N, 128)``.

    With ``weights`` (face-api's tensors by manifest name, as :func:`read_tfjs_weights` returns
    them) every parameter is loaded from them; without, Keras' initialisers are used (scale 1,
    offset 0). The output is not L2-normalised; :func:`export_embedder` does that in-graph.
    """
    layers = keras.layers
    images = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype="float32", name="images")
    x = layers.Normalization(mean=list(MEAN_RGB), variance=[255.0**2] * 3, name="normalize")(images)
    x = _conv_unit(x, "stem_conv", 32, kernel=7, strides=2, padding="valid", relu=True)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    for block in _BLOCKS:
        x = _residual_block(x, block)
    x = layers.GlobalAveragePooling2D(name="out256_mean")(x)
    descriptor = layers.Dense(DESCRIPTOR_DIM, use_bias=False, name="fc")(x)
    model = keras.Model(images, descriptor, name="dlib_r34")
    if weights is not None:
        load_tfjs_weights(model, weights)
    return model


def _conv_unit(
    x: Any, name: str, filters: int, *, kernel: int, strides: int, padding: str, relu: bool
) -> Any:
    """Convolution with bias, then the folded batch norm, then optionally ReLU."""
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, name=name)(x)
    x = ChannelAffine(name=f"{name}_scale")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _residual_block(x: Any, block: _Block) -> Any:
    """face-api's ``residual`` / ``residualDown``: two convolutions plus a shortcut, then ReLU."""
    layers = keras.layers
    strides, padding = (2, "valid") if block.down else (1, "same")
    out = _conv_unit(
        x,
        f"{block.name}_conv1",
        block.filters,
        kernel=3,
        strides=strides,
        padding=padding,
        relu=True,
    )
    out = _conv_unit(
        out, f"{block.name}_conv2", block.filters, kernel=3, strides=1, padding="same", relu=False
    )
    shortcut = x
    if block.down:
        shortcut = layers.AveragePooling2D(
            2, strides=2, padding="valid", name=f"{block.name}_pool"
        )(x)
        if shortcut.shape[-1] != block.filters:
            shortcut = ZeroPadChannels(block.filters, name=f"{block.name}_widen")(shortcut)
        missing = shortcut.shape[1] - out.shape[1]
        if missing:
            out = layers.ZeroPadding2D(((0, missing), (0, missing)), name=f"{block.name}_pad")(out)
    out = layers.Add(name=f"{block.name}_add")([out, shortcut])
    return layers.ReLU(name=f"{block.name}_relu")(out)


def tfjs_weight_names(layer_name: str) -> dict[str, str]:
    """Our variable name -> face-api's tensor name, for one layer of this network.

    Empty for layers without weights. The stem's unit is ``conv32_down`` in face-api, each
    block's ``<name>_conv<k>`` is ``<source>/conv<k>``, and the projection is ``fc``.
    """
    if layer_name == "fc":
        return {"kernel": "fc"}
    if layer_name in _UNITS:
        prefix = _UNITS[layer_name]
        return {"kernel": f"{prefix}/conv/filters", "bias": f"{prefix}/conv/bias"}
    if layer_name.removesuffix("_scale") in _UNITS:
        prefix = _UNITS[layer_name.removesuffix("_scale")]
        return {"scale": f"{prefix}/scale/weights", "offset": f"{prefix}/scale/biases"}
    return {}


def load_tfjs_weights(model: keras.Model, weights: Mapping[str, np.ndarray]) -> None:
    """Assign face-api's tensors to ``model``'s variables; all of them, each exactly once.

    TF.js stores convolution kernels as HWIO and the projection as (in, out), Keras' layouts,
    so no tensor is transposed. A missing, unused or mis-shaped tensor raises
    :class:`TfjsWeightsError` before the model is left half loaded.
    """
    assignments: list[tuple[keras.Variable, np.ndarray]] = []
    used: set[str] = set()
    for layer in model.layers:
        names = tfjs_weight_names(layer.name)
        for variable in layer.weights:
            source = names.get(variable.name)
            if source is None:
                raise TfjsWeightsError(f"no face-api tensor for {layer.name}/{variable.name}")
            if source not in weights:
                raise TfjsWeightsError(f"the weights lack {source!r} (for {layer.name})")
            value = np.asarray(weights[source], dtype=np.float32)
            if value.shape != tuple(variable.shape):
                raise TfjsWeightsError(
                    f"{source!r} has shape {value.shape}, "
                    f"{layer.name}/{variable.name} needs {tuple(variable.shape)}"
                )
            assignments.append((variable, value))
            used.add(source)
    unused = sorted(set(weights) - used)
    if unused:
        raise TfjsWeightsError(f"{len(unused)} tensors fit no layer, e.g. {unused[:3]}")
    for variable, value in assignments:
        variable.assign(value)


def set_trainable_from(model: keras.Model, stage: str) -> None:
    """Freeze every stage before ``stage`` (one of :data:`STAGES`) and train it and later ones.

    Fine-tuning a pretrained descriptor on few identities keeps the generic early filters and
    adapts the late, identity-specific ones.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    frozen = STAGES[: STAGES.index(stage)]
    for layer in model.layers:
        layer.trainable = not layer.name.startswith(frozen)
