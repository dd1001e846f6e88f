"""The distributed training loop: MultiWorkerMirroredStrategy, written out by hand.

Why not ``model.fit``: under MWMS, Keras 3's ``fit`` fails (keras-team/keras#20585), and its
``BackupAndRestore`` callback has every worker write the same backup folder, which collides on
a shared volume. The loop is the plain pattern instead: ``distribute_datasets_from_function``
for the input, ``strategy.run`` of a replica step inside one ``tf.function``, ``strategy.reduce``
for the loss that is logged.

Gradients: each replica's loss is its batch mean divided by the number of replicas, because
the optimizer sums the replicas' gradients (an all-reduce); the step thus follows the mean loss
of the global batch, whatever the worker count.

Checkpoints (``tf.train.CheckpointManager``): every worker calls ``save`` at the same steps,
because saving may run collectives; only the chief writes to ``checkpoints/``, the others to
their own ``workers/<i>/`` scratch, deleted right after. A restarted run restores the latest
checkpoint of ``checkpoints/`` (weights, optimizer state, step) on every worker and goes on
from that step.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facerank.embedding.base import l2_normalize
from facerank.settings import Settings
from training.backbones import Backbone, build_backbone
from training.batches import class_ids, input_fn
from training.config import TrainConfig
from training.data import FaceDataset, Split
from training.errors import TrainingError
from training.evaluate import embed_with_model
from training.losses import ArcFaceHead, make_loss
from training.rundir import ProgressLog, RunDir
from training.watchdog import Watchdog

log = logging.getLogger(__name__)

CHECKPOINTS_KEPT = 2
HEAD_LR_FACTOR = 10.0
"""The ArcFace head learns this much faster than the backbone: it starts from scratch."""


@dataclass(frozen=True)
class TrainOutcome:
    """What the loop leaves: the trained backbone and how the training went."""

    backbone: Backbone
    resumed_from: int
    steps: int
    seconds: float
    images_per_s: float
    """Global images per second after the first step (which includes tracing)."""
    final_loss: float | None
    """None when no step ran (the run had finished training before this attempt)."""


@dataclass(frozen=True)
class _Parts:
    """Everything a step updates, and the checkpoint that saves it."""

    backbone: Backbone
    optimizer: keras.optimizers.Optimizer
    head: ArcFaceHead | None
    head_optimizer: keras.optimizers.Optimizer | None
    step: tf.Variable
    checkpoint: tf.train.Checkpoint


class DistributedTrainer:
    """One worker's share of a run: builds the model under ``strategy`` and trains it."""

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        config: TrainConfig,
        run: RunDir,
        cluster_index: int,
        watchdog: Watchdog,
        progress: ProgressLog | None,
    ) -> None:
        """``progress`` is the chief's log; None on the other workers."""
        self.strategy = strategy
        self.config = config
        self.run = run
        self.index = cluster_index
        self.watchdog = watchdog
        self.progress = progress
        self._window = (0, time.monotonic())
        """(step, time) where the current images/s window began."""

    def train(self, dataset: FaceDataset, split: Split, settings: Settings) -> TrainOutcome:
        config, strategy = self.config, self.strategy
        parts = self._build(dataset, split, settings)
        start = self._restore(parts.checkpoint, parts.step)
        if parts.head is not None and start == 0:
            imprint_centres(self.strategy, parts.head, parts.backbone, dataset, split)
        manager = self._manager(parts.checkpoint)
        inputs = strategy.distribute_datasets_from_function(
            input_fn(dataset, split.train, config, start_step=start)
        )
        main = self._step_fn(parts, config.loss, warmup=False)
        warmup = (
            self._step_fn(parts, "arcface", warmup=True) if config.warmup_steps > start else main
        )
        self._record(
            "start", step=start, workers=strategy.num_replicas_in_sync, backbone=parts.backbone.kind
        )
        iterator = iter(inputs)
        began = first_done = time.monotonic()
        self._window = (start, began)
        loss = float("nan")
        for current in range(start, config.total_steps):
            first = current == start
            self.watchdog.arm(
                config.startup_timeout_s if first else config.collective_timeout_s,
                "the first step (every worker up, graph traced)" if first else "a training step",
            )
            loss = float(warmup(iterator) if current < config.warmup_steps else main(iterator))
            done = current + 1
            if first:
                first_done = time.monotonic()
            if not np.isfinite(loss):
                raise TrainingError(
                    f"the loss diverged ({loss}) at step {done}: lower the learning rate"
                )
            if done % config.log_every == 0 or done == config.total_steps:
                self._log_step(done, loss, began)
            if done % config.checkpoint_every == 0 or done == config.total_steps:
                manager.save(checkpoint_number=done)
                self._after_save(done)
        self.watchdog.disarm()
        steady = config.total_steps - start - 1
        return TrainOutcome(
            backbone=parts.backbone,
            resumed_from=start,
            steps=config.total_steps,
            seconds=time.monotonic() - began,
            images_per_s=(
                steady * config.global_batch / (time.monotonic() - first_done)
                if steady > 0
                else 0.0
            ),
            final_loss=loss if np.isfinite(loss) else None,
        )

    def _build(self, dataset: FaceDataset, split: Split, settings: Settings) -> _Parts:
        """The backbone, the ArcFace head if the loss needs one, their optimizers (with their
        slots, so a checkpoint restores into them) and the step counter, under the strategy.

        The head is new and random while the backbone is pretrained, so it gets its own
        optimizer with a :data:`HEAD_LR_FACTOR` times larger learning rate.
        """
        config = self.config
        with self.strategy.scope():
            backbone = build_backbone(config, dataset.chip, settings)
            optimizer = keras.optimizers.Adam(config.learning_rate)
            optimizer.build(backbone.model.trainable_variables)
            head = head_optimizer = None
            if config.uses_arcface:
                head = ArcFaceHead(len(split.train), name="arcface")
                head.build((None, config.embedding_dim))
                head_optimizer = keras.optimizers.Adam(config.learning_rate * HEAD_LR_FACTOR)
                head_optimizer.build(head.trainable_variables)
            step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        tracked: dict[str, Any] = {"backbone": backbone.model, "optimizer": optimizer, "step": step}
        if head is not None:
            tracked.update(head=head, head_optimizer=head_optimizer)
        return _Parts(
            backbone, optimizer, head, head_optimizer, step, tf.train.Checkpoint(**tracked)
        )

    def _restore(self, checkpoint: tf.train.Checkpoint, step: tf.Variable) -> int:
        latest = tf.train.latest_checkpoint(str(self.run.checkpoints_dir))
        if latest is None:
            return 0
        checkpoint.restore(latest).assert_existing_objects_matched()
        start = int(step.numpy())
        log.info("resumed from %s at step %d", latest, start)
        return start

    def _manager(self, checkpoint: tf.train.Checkpoint) -> tf.train.CheckpointManager:
        directory = self.run.checkpoints_dir if self.progress is not None else self._scratch
        return tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=CHECKPOINTS_KEPT)

    @property
    def _scratch(self) -> Path:
        return self.run.worker_dir(self.index)

    def _after_save(self, done: int) -> None:
        if self.progress is None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        else:
            self._record("checkpoint", step=done)

    def _step_fn(self, parts: _Parts, loss: str, *, warmup: bool) -> Callable[[Any], tf.Tensor]:
        """One training step with ``loss`` over the iterator's next global batch, traced once.

        A warm-up step trains the ArcFace head alone: the backbone's features stay as they
        are until the head's class centres fit them, so its random start cannot wreck them.
        """
        strategy = self.strategy
        replicas = strategy.num_replicas_in_sync
        loss_fn = make_loss(loss, self.config.margin, parts.head)
        updates = [] if warmup else [(parts.optimizer, parts.backbone.model.trainable_variables)]
        if "arcface" in loss.split("+"):
            updates.append((parts.head_optimizer, parts.head.trainable_variables))

        def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                value = loss_fn(labels, parts.backbone.model(images, training=not warmup))
                scaled = value / replicas
            gradients = tape.gradient(scaled, [v for _, variables in updates for v in variables])
            for optimizer, variables in updates:
                mine, gradients = gradients[: len(variables)], gradients[len(variables) :]
                optimizer.apply_gradients(zip(mine, variables, strict=True))
            return value

        @tf.function
        def train_step(iterator: Any) -> tf.Tensor:
            images, labels = next(iterator)
            losses = strategy.run(replica_step, args=(images, labels))
            parts.step.assign_add(1)
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

        return train_step

    def _log_step(self, done: int, loss: float, began: float) -> None:
        config = self.config
        elapsed = time.monotonic() - began
        log.info("step %d/%d loss %.4f", done, config.total_steps, loss)
        if self.progress is None:
            return
        since, at = self._window
        rate = (done - since) * config.global_batch / max(time.monotonic() - at, 1e-9)
        self._window = (done, time.monotonic())
        self._record(
            "step",
            step=done,
            epoch=done / config.steps_per_epoch,
            loss=loss,
            images_per_s=rate,
            elapsed_s=elapsed,
        )

    def _record(self, event: str, **fields: Any) -> None:
        if self.progress is not None:
            self.progress.append({"event": event, "time": time.time(), **fields})


def imprint_centres(
    strategy: tf.distribute.Strategy,
    head: ArcFaceHead,
    backbone: Backbone,
    dataset: FaceDataset,
    split: Split,
) -> None:
    """Start each ArcFace class centre at its identity's mean embedding (weight
    imprinting, Qi et al. 2018) instead of a random direction.

    A random head on a pretrained backbone yields a large, misleading loss whose gradients
    damage features that were already good; imprinted centres start the margin loss where
    the backbone stands. Every worker computes the centres from the same faces and weights;
    their mean over the workers is assigned, so the mirrored copies stay equal.
    """
    faces = split.faces(dataset.labels, split.train)
    classes = class_ids(len(dataset.identities), split.train)[dataset.labels[faces]]
    vectors = embed_with_model(backbone.model, dataset.chips[faces])
    sums = np.zeros((len(split.train), vectors.shape[1]), np.float32)
    np.add.at(sums, classes, vectors)
    centres = l2_normalize(sums).T

    @tf.function
    def agree() -> tf.Tensor:
        local = strategy.run(lambda: tf.constant(centres))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None)

    head.centres.assign(agree())
    log.info("ArcFace centres imprinted from %d faces of %d identities", len(faces), len(sums))


def barrier(strategy: tf.distribute.Strategy, timeout_s: float) -> None:
    """Wait until every worker gets here, for up to ``timeout_s``: the run's last collective.

    The workers leave together: a worker that exits while the chief still exports makes the
    chief's own exit wait for the coordination service to declare it dead (about 10 s). Being
    the last, it has a race of its own: a worker that has done its part of the all-reduce may
    exit before the other has fetched its buffer, and TensorFlow then fails the late one with
    ``UnavailableError`` ("Socket closed"; seen in CI's cluster run). The peer had reached the
    barrier, and the chief's result was written before it, so that is said in one line and
    the worker ends as it would have. A peer that never comes still fails the barrier
    (``DeadlineExceededError``).
    """
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)

    @tf.function
    def meet() -> tf.Tensor:
        value = strategy.run(lambda: tf.constant(1.0))
        return strategy.extended.reduce_to(
            tf.distribute.ReduceOp.SUM, value, destinations=value, options=options
        )

    try:
        meet()
    except tf.errors.UnavailableError:
        log.info("a peer left the final barrier first (it had reached it): done")


def cluster_strategy(config: TrainConfig) -> tf.distribute.Strategy:
    """MWMS for the cluster ``TF_CONFIG`` describes (a single local worker when it is unset),
    every collective bounded by the config's timeout."""
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=config.collective_timeout_s
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
