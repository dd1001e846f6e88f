"""Triplet mining and ArcFace against small cases computed by hand.

Four unit vectors on a circle, at 0 and 50 degrees (identity a) and 56 and 120 degrees
(identity b); squared distances are ``2 - 2 cos(angle)``:

    a0-a1 0.714425   a0-b0 0.881614   a0-b1 3.0
    a1-b0 0.010956   a1-b1 1.315960   b0-b1 1.123258

Semi-hard (FaceNet, margin 0.2), per anchor-positive pair:

* a0-a1: both negatives are farther than 0.714425; the closer, b0 (0.881614), is chosen:
  0.714425 - 0.881614 + 0.2 = 0.032811
* a1-a0: b0 (0.010956) is closer than the positive, so b1 (1.315960) is the semi-hard one: 0
* b0-b1: no negative is farther than 1.123258, so the farthest one, a0 (0.881614): 0.441644
* b1-b0: both farther, the closer a1 (1.315960): 0.007298

Mean 0.120438. The hardest negative everywhere would give 0.563970, and the hardest negative
only where no semi-hard one exists 0.338103: a test passing with either rule could not tell.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from training.losses import (  # noqa: E402
    ArcFaceHead,
    arcface_loss,
    batch_hard_triplet_loss,
    make_loss,
    semihard_triplet_loss,
)

LABELS = np.array([0, 0, 1, 1])
ANGLES = np.radians([0.0, 50.0, 56.0, 120.0])


def circle(angles: np.ndarray, radius: float = 1.0) -> tf.Tensor:
    return tf.constant(np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius, tf.float32)


def test_semihard_mining_matches_the_hand_computed_value() -> None:
    loss = float(semihard_triplet_loss(tf.constant(LABELS), circle(ANGLES), 0.2))
    assert loss == pytest.approx(0.120438, abs=1e-5)
    assert loss != pytest.approx(0.563970, abs=1e-2)  # hardest-negative mining
    assert loss != pytest.approx(0.338103, abs=1e-2)  # hardest as the fallback


def test_losses_use_normalised_embeddings() -> None:
    """Scaling the raw embeddings changes nothing: distances are between unit vectors."""
    labels = tf.constant(LABELS)
    for loss in (semihard_triplet_loss, batch_hard_triplet_loss):
        assert float(loss(labels, circle(ANGLES, 7.0), 0.2)) == pytest.approx(
            float(loss(labels, circle(ANGLES), 0.2)), abs=1e-5
        )


def test_batch_hard_matches_the_hand_computed_value() -> None:
    """Euclidean distances: each anchor's farthest positive against its closest negative.

    a0: 0.845236 - 0.938943 + 0.2 = 0.106293   a1: 0.845236 - 0.104672 + 0.2 = 0.940565
    b0: 1.059838 - 0.104672 + 0.2 = 1.155167   b1: 1.059838 - 1.147153 + 0.2 = 0.112686
    """
    loss = float(batch_hard_triplet_loss(tf.constant(LABELS), circle(ANGLES), 0.2))
    assert loss == pytest.approx(0.578678, abs=1e-5)


def test_triplet_losses_ignore_anchors_without_negatives() -> None:
    """One identity in a replica's share: no triplet, zero loss (not NaN, no gradient)."""
    embeddings = tf.Variable(circle(ANGLES[:2]))
    labels = tf.constant([3, 3])
    for loss_fn in (semihard_triplet_loss, batch_hard_triplet_loss):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, embeddings, 0.2)
        gradient = tape.gradient(loss, embeddings)
        assert float(loss) == 0.0
        assert np.all(np.isfinite(gradient.numpy()))


def test_gradients_pull_positives_together() -> None:
    embeddings = tf.Variable(circle(ANGLES))
    with tf.GradientTape() as tape:
        loss = semihard_triplet_loss(tf.constant(LABELS), embeddings, 0.2)
    step = -tape.gradient(loss, embeddings).numpy()
    moved = embeddings.numpy() + 0.1 * step
    assert float(semihard_triplet_loss(tf.constant(LABELS), tf.constant(moved), 0.2)) < float(loss)


def arcface_head(scale: float) -> ArcFaceHead:
    """Two classes with centres at 30 and 90 degrees."""
    head = ArcFaceHead(2, scale=scale, margin=0.5)
    head.build((None, 2))
    head.centres.assign(np.array([[math.cos(math.pi / 6), 0.0], [math.sin(math.pi / 6), 1.0]]))
    return head


def test_arcface_adds_the_angular_margin_to_the_target_only() -> None:
    """e = (1, 0), class 0: theta 30 degrees, so the target logit is cos(30 deg + 0.5 rad) =
    0.520296; the other class's is cos(90 deg) = 0. Cross-entropy log(1 + e^-0.520296)."""
    head = arcface_head(scale=1.0)
    embedding = tf.constant([[1.0, 0.0]])
    logits = head(embedding, tf.constant([0])).numpy()
    np.testing.assert_allclose(logits, [[0.520296, 0.0]], atol=1e-5)
    loss = float(arcface_loss(head, tf.constant([0]), embedding))
    assert loss == pytest.approx(0.466463, abs=1e-5)


def test_arcface_keeps_falling_past_pi_minus_margin() -> None:
    """At 170 degrees, cos(theta + m) would rise again; the linear continuation
    cos(theta) - sin(pi - m) * m = -1.224521 is used instead."""
    head = arcface_head(scale=1.0)
    angle = math.radians(30 + 170)  # 170 degrees from class 0's centre
    logits = head(tf.constant([[math.cos(angle), math.sin(angle)]]), tf.constant([0])).numpy()
    assert logits[0, 0] == pytest.approx(-1.224521, abs=1e-5)


def test_combined_loss_is_the_sum() -> None:
    head = arcface_head(scale=30.0)
    labels = tf.constant([0, 0, 1, 1])
    embeddings = circle(ANGLES)
    combined = make_loss("arcface+batchhard", 0.2, head)(labels, embeddings)
    expected = arcface_loss(head, labels, embeddings) + batch_hard_triplet_loss(
        labels, embeddings, 0.2
    )
    assert float(combined) == pytest.approx(float(expected), abs=1e-6)
    with pytest.raises(ValueError, match="ArcFaceHead"):
        make_loss("arcface", 0.2, None)


def test_arcface_centres_start_at_the_class_means(tmp_path: Path) -> None:
    """Imprinting: each centre is its identity's normalised mean embedding."""
    from facerank.faces.align import DLIB_CHIP_150
    from facerank.settings import Settings
    from training.backbones import build_backbone, scaled_chip
    from training.config import TrainConfig
    from training.data import read_dataset, split_by_identity, write_dataset
    from training.evaluate import embed_with_model
    from training.loop import imprint_centres
    from training.rundir import RunDir

    config = TrainConfig(
        run_id="imprint",
        version="ft-imprint",
        backbone="scratch",
        image_size=32,
        embedding_dim=8,
        loss="arcface",
        holdout_fraction=0.0,
    )
    run = RunDir.create(tmp_path, config)
    chips = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    write_dataset(run, scaled_chip(DLIB_CHIP_150, 32), chips, ["x", "y", "z"] * 4)
    dataset = read_dataset(run)
    split = split_by_identity(dataset.labels, 0.0, 0)
    settings = Settings(data_dir=tmp_path)
    backbone = build_backbone(config, dataset.chip, settings)
    head = ArcFaceHead(3)
    head.build((None, 8))
    imprint_centres(tf.distribute.get_strategy(), head, backbone, dataset, split)
    vectors = embed_with_model(backbone.model, dataset.chips)
    for identity in range(3):
        mean = vectors[dataset.labels == identity].mean(axis=0)
        np.testing.assert_allclose(
            head.centres.numpy()[:, identity], mean / np.linalg.norm(mean), atol=1e-5
        )
