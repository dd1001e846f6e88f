"""Descriptors built from descriptors: test-time flip averaging and concatenation.

Why: on LFW's development pairs two different nets make different mistakes, and a face and
its mirror image give two views of the same identity, so averaging or concatenating unit
descriptors separates people better than either alone (the README gives the figures). Both
are plain TensorFlow callables over 0..255 RGB chips, so they export like any other model.

A concatenation feeds each part its own chip layout, resampled inside the graph from one
shared chip that contains all of them: the pipeline aligns one chip per face (the
:class:`~facerank.embedding.base.Embedder` contract), and the resampling is the same bilinear
similarity warp :func:`~facerank.faces.align.align_face` does, with the same pixel-centre
convention and black border.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from facerank.faces.align import ChipSpec, similarity_transform

Net = Callable[[Any], Any]
"""0..255 RGB chips -> descriptors; exports track what its ``variables`` lists."""


class FlipAveraged:
    """``net``'s unit descriptor of a chip plus that of its mirror image (not normalised)."""

    def __init__(self, net: Net) -> None:
        self.net = net

    @property
    def variables(self) -> list[Any]:
        return variables_of(self.net)

    def __call__(self, images: Any) -> Any:
        import tensorflow as tf

        mirrored = tf.reverse(images, axis=[2])
        return _unit(self.net(images)) + _unit(self.net(mirrored))


class Concatenated:
    """The parts' unit descriptors side by side, scaled so the whole is a unit vector.

    ``parts`` are ``(net, chip layout)`` pairs; ``chip`` is the layout the whole takes, and
    every part's layout is warped out of it.
    """

    def __init__(self, parts: Sequence[tuple[Net, ChipSpec]], chip: ChipSpec) -> None:
        if not parts:
            raise ValueError("a concatenation needs at least one part")
        self.parts = list(parts)
        self.chip = chip
        self._transforms = [chip_to_chip(chip, spec) for _, spec in self.parts]

    @property
    def variables(self) -> list[Any]:
        return [variable for net, _ in self.parts for variable in variables_of(net)]

    def __call__(self, images: Any) -> Any:
        import tensorflow as tf

        scale = 1 / math.sqrt(len(self.parts))
        descriptors = []
        for (net, spec), transform in zip(self.parts, self._transforms, strict=True):
            chips = images if transform is None else _warp(images, transform, spec.size)
            descriptors.append(_unit(net(chips)) * scale)
        return tf.concat(descriptors, axis=-1)


def variables_of(net: Net) -> list[Any]:
    """The variables ``net`` reads (a Keras model's, a graph's), for an export to track."""
    return list(getattr(net, "variables", ()))


def chip_to_chip(source: ChipSpec, target: ChipSpec) -> np.ndarray | None:
    """The 8 projective coefficients mapping ``target`` chip pixels to ``source`` chip pixels
    (what TensorFlow's image transform takes), or None when the layouts are the same."""
    if source == target:
        return None
    forward = np.vstack(
        [
            similarity_transform(
                (source.left_eye, source.right_eye), (target.left_eye, target.right_eye)
            ),
            (0.0, 0.0, 1.0),
        ]
    )
    inverse = np.linalg.inv(forward)
    return np.concatenate([inverse[0], inverse[1], [0.0, 0.0]]).astype(np.float32)


def _warp(images: Any, transform: np.ndarray, size: int) -> Any:
    import tensorflow as tf

    count = tf.shape(images)[0]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=tf.tile(tf.constant(transform)[None], [count, 1]),
        output_shape=tf.constant([size, size], tf.int32),
        fill_value=tf.constant(0.0),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def _unit(vectors: Any) -> Any:
    import tensorflow as tf

    return tf.math.l2_normalize(tf.cast(vectors, tf.float32), axis=-1)
