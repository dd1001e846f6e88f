"""Metric-learning losses on L2-normalised embeddings, with triplets mined inside each batch.

* :func:`semihard_triplet_loss`: FaceNet (Schroff et al., 2015). Squared distances, margin 0.2.
  For every anchor-positive pair the negative is the *closest negative farther than the
  positive* (semi-hard: it still violates the margin, yet is not so hard that training
  collapses early); when no negative is farther than the positive, the farthest negative is
  used, the least misleading of the hard ones. Averaged over all anchor-positive pairs.
* :func:`batch_hard_triplet_loss`: Hermans et al., 2017. Euclidean distances; for each anchor
  its farthest positive against its closest negative. Averaged over anchors.
* :class:`ArcFaceHead` + :func:`arcface_loss`: Deng et al., 2019. A cosine classifier over the
  training identities whose target logit gets an additive angular margin; a strong signal
  from the first step, so it also serves as warm-up before triplet mining (which needs an
  embedding that is already somewhat organised to find useful triplets).

Anchors without a positive or without a negative in the batch contribute nothing: a replica's
share of a P x K batch may hold a single identity when P is small.

This module imports Keras at the top (the head is a layer): only training imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

ARCFACE_SCALE = 30.0
"""Logit scale s; 64 in the paper for 85k identities, 30 suits hundreds of identities."""
ARCFACE_MARGIN = 0.5
"""Additive angular margin m in radians, the paper's value."""

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
"""``loss(labels, embeddings) -> scalar``: the mean loss of one replica's batch."""


def pairwise_squared_distances(embeddings: tf.Tensor) -> tf.Tensor:
    """``(B, B)`` squared Euclidean distances, clipped at 0 against rounding."""
    squares = tf.reduce_sum(tf.square(embeddings), axis=1)
    gram = tf.matmul(embeddings, embeddings, transpose_b=True)
    return tf.maximum(squares[:, None] + squares[None, :] - 2.0 * gram, 0.0)


def _masks(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Boolean ``(B, B)`` positive and negative pairs; a face is not its own positive."""
    same = tf.equal(labels[:, None], labels[None, :])
    eye = tf.eye(tf.shape(labels)[0], dtype=tf.bool)
    return tf.logical_and(same, tf.logical_not(eye)), tf.logical_not(same)


def _masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    count = tf.reduce_sum(tf.cast(mask, values.dtype))
    return tf.reduce_sum(tf.where(mask, values, 0.0)) / tf.maximum(count, 1.0)


def semihard_triplet_loss(labels: tf.Tensor, embeddings: tf.Tensor, margin: float) -> tf.Tensor:
    """FaceNet's triplet loss with online semi-hard negative mining (see the module doc)."""
    distances = pairwise_squared_distances(tf.math.l2_normalize(embeddings, axis=1))
    positives, negatives = _masks(labels)
    d_ap = distances[:, :, None]  # (anchor, positive, 1)
    d_an = distances[:, None, :]  # (anchor, 1, negative)
    farther = tf.logical_and(negatives[:, None, :], d_an > d_ap)
    semihard = tf.reduce_min(tf.where(farther, d_an, math.inf), axis=2)
    farthest = tf.reduce_max(tf.where(negatives, distances, -math.inf), axis=1)
    chosen = tf.where(tf.reduce_any(farther, axis=2), semihard, farthest[:, None])
    has_negative = tf.reduce_any(negatives, axis=1)[:, None]
    valid = tf.logical_and(positives, has_negative)
    losses = tf.nn.relu(distances - tf.where(valid, chosen, 0.0) + margin)
    return _masked_mean(losses, valid)


def batch_hard_triplet_loss(labels: tf.Tensor, embeddings: tf.Tensor, margin: float) -> tf.Tensor:
    """The batch-hard triplet loss: each anchor's farthest positive vs its closest negative."""
    squared = pairwise_squared_distances(tf.math.l2_normalize(embeddings, axis=1))
    distances = tf.sqrt(tf.maximum(squared, 1e-12))
    positives, negatives = _masks(labels)
    hardest_positive = tf.reduce_max(tf.where(positives, distances, 0.0), axis=1)
    hardest_negative = tf.reduce_min(tf.where(negatives, distances, math.inf), axis=1)
    valid = tf.logical_and(tf.reduce_any(positives, axis=1), tf.reduce_any(negatives, axis=1))
    hardest_negative = tf.where(valid, hardest_negative, 0.0)
    return _masked_mean(tf.nn.relu(hardest_positive - hardest_negative + margin), valid)


@keras.saving.register_keras_serializable(package="facerank")
class ArcFaceHead(keras.layers.Layer):
    """Logits ``s * cos(theta + m)`` for the target class and ``s * cos(theta)`` for the
    others, ``theta`` being the angle between the embedding and each class centre."""

    def __init__(
        self,
        classes: int,
        *,
        scale: float = ARCFACE_SCALE,
        margin: float = ARCFACE_MARGIN,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.classes, self.scale, self.margin = classes, scale, margin

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.centres = self.add_weight(
            name="centres", shape=(input_shape[-1], self.classes), initializer="glorot_uniform"
        )

    def call(self, embeddings: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        cosine = tf.matmul(
            tf.math.l2_normalize(embeddings, axis=1), tf.math.l2_normalize(self.centres, axis=0)
        )
        cosine = tf.clip_by_value(cosine, -1.0 + 1e-7, 1.0 - 1e-7)
        sine = tf.sqrt(1.0 - tf.square(cosine))
        with_margin = cosine * math.cos(self.margin) - sine * math.sin(self.margin)
        # Past theta = pi - m, cos(theta + m) would grow again: use the usual linear
        # continuation so the target logit keeps falling with the angle.
        beyond = cosine - math.sin(math.pi - self.margin) * self.margin
        with_margin = tf.where(cosine > math.cos(math.pi - self.margin), with_margin, beyond)
        target = tf.equal(labels[:, None], tf.range(self.classes, dtype=labels.dtype))
        return self.scale * tf.where(target, with_margin, cosine)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "classes": self.classes,
            "scale": self.scale,
            "margin": self.margin,
        }


def arcface_loss(head: ArcFaceHead, labels: tf.Tensor, embeddings: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy of the ArcFace logits against the faces' classes."""
    logits = head(embeddings, labels)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )


def make_loss(name: str, margin: float, head: ArcFaceHead | None) -> LossFn:
    """The loss a config names (``semihard``, ``batchhard``, ``arcface`` or
    ``arcface+<triplet>``: the two summed); ``head`` is required when ArcFace is part of it."""
    triplets = {"semihard": semihard_triplet_loss, "batchhard": batch_hard_triplet_loss}
    terms: list[LossFn] = []
    for part in name.split("+"):
        if part == "arcface":
            if head is None:
                raise ValueError(f"loss {name!r} needs an ArcFaceHead")
            terms.append(lambda labels, embeddings: arcface_loss(head, labels, embeddings))
        elif part in triplets:
            mine = triplets[part]
            terms.append(lambda labels, embeddings, mine=mine: mine(labels, embeddings, margin))
        else:
            raise ValueError(f"unknown loss {part!r} in {name!r}")

    def loss(labels: tf.Tensor, embeddings: tf.Tensor) -> tf.Tensor:
        return tf.add_n([term(labels, embeddings) for term in terms])

    return loss
