"""Identity-balanced P x K batches with augmentation, as one ``tf.data`` pipeline per worker.

Triplet mining needs every batch to hold several faces of each of several people: a batch of
random faces from hundreds of identities rarely has a positive pair. So each batch draws P
identities (without replacement) and K faces of each: all of an identity's faces in random
order when it has K or more, and when it has fewer, all of them plus repeats, so no face is
left out for the sake of another.

All randomness, which faces and how each is augmented (horizontal flip, a crop of 90 to 100 %
of the chip at a random place, brightness and contrast), comes from one seeded NumPy generator
per input pipeline: the batches are reproducible, and a test can check them without
TensorFlow. The pixels themselves are warped in TensorFlow, one vectorised
``crop_and_resize`` per batch (a box whose x1 > x2 flips the crop).

Caching: the dataset's chips are decoded once into memory (``chips.npy``); every step gathers
its batch from that array, so no image is ever decoded or re-aligned during training.

Sharding: :func:`input_fn` is handed to ``strategy.distribute_datasets_from_function``, which
calls it once per worker with an ``InputContext``. Each worker then builds its own pipeline
with P / workers identities per batch (triplets are mined within each replica's share) and a
generator seeded by (run seed, worker, step the run resumed at), so workers draw different
batches and a resumed run does not replay the batches it already trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from training.errors import TrainingDataError

if TYPE_CHECKING:
    import tensorflow as tf

    from training.config import TrainConfig
    from training.data import FaceDataset

MIN_CROP = 0.90
"""The smallest crop, as a fraction of the chip side: mild scale and position jitter."""
BRIGHTNESS = 20.0
"""Largest brightness shift, in 0..255 pixel units."""
CONTRAST = (0.8, 1.2)


@dataclass(frozen=True)
class Batch:
    """One batch as drawn: which faces, and how each is augmented."""

    indices: np.ndarray
    """``(P*K,)`` int64 face indices, identity by identity (K consecutive faces each)."""
    boxes: np.ndarray
    """``(P*K, 4)`` float32 ``[y1, x1, y2, x2]`` crop boxes in chip fractions."""
    brightness: np.ndarray
    """``(P*K,)`` float32 added to every pixel."""
    contrast: np.ndarray
    """``(P*K,)`` float32 factor applied around each image's mean."""


class BalancedSampler:
    """Endless P x K batches over ``identities`` (indices into the dataset's identities)."""

    def __init__(
        self,
        labels: np.ndarray,
        identities: np.ndarray,
        *,
        p: int,
        k: int,
        seed: int | tuple[int, ...],
    ) -> None:
        if len(identities) < p:
            raise TrainingDataError(
                f"a batch needs {p} identities per replica, but only {len(identities)} are "
                "trained on: lower identities_per_batch or add identities"
            )
        self.p, self.k = p, k
        self._identities = np.asarray(identities)
        self._faces = {int(i): np.flatnonzero(labels == i) for i in self._identities}
        empty = [i for i, faces in self._faces.items() if not len(faces)]
        if empty:
            raise TrainingDataError(f"identities without faces cannot be sampled: {empty[:5]}")
        self._rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.batch()

    def batch(self) -> Batch:
        rng = self._rng
        chosen = rng.choice(self._identities, size=self.p, replace=False)
        indices = np.concatenate([self._faces_of(int(i)) for i in chosen])
        n = len(indices)
        side = rng.uniform(MIN_CROP, 1.0, n)
        top, left = rng.uniform(0, 1, n) * (1 - side), rng.uniform(0, 1, n) * (1 - side)
        boxes = np.stack([top, left, top + side, left + side], axis=1)
        flip = rng.random(n) < 0.5
        boxes[flip] = boxes[flip][:, [0, 3, 2, 1]]
        return Batch(
            indices=indices.astype(np.int64),
            boxes=boxes.astype(np.float32),
            brightness=rng.uniform(-BRIGHTNESS, BRIGHTNESS, n).astype(np.float32),
            contrast=rng.uniform(*CONTRAST, n).astype(np.float32),
        )

    def _faces_of(self, identity: int) -> np.ndarray:
        faces = self._rng.permutation(self._faces[identity])
        if len(faces) >= self.k:
            return faces[: self.k]
        return np.concatenate([faces, self._rng.choice(faces, self.k - len(faces))])


def class_ids(num_identities: int, train: np.ndarray) -> np.ndarray:
    """Dataset identity -> ArcFace class (0..len(train)-1); -1 for identities not trained on."""
    classes = np.full(num_identities, -1, dtype=np.int32)
    classes[train] = np.arange(len(train), dtype=np.int32)
    return classes


def augment(images: tf.Tensor, batch: dict[str, tf.Tensor]) -> tf.Tensor:
    """uint8 ``(B, S, S, 3)`` -> float32 0..255, cropped, flipped and lit as ``batch`` says."""
    import tensorflow as tf

    size = images.shape[1]
    pixels = tf.image.crop_and_resize(
        tf.cast(images, tf.float32),
        batch["boxes"],
        tf.range(tf.shape(images)[0]),
        [size, size],
    )
    mean = tf.reduce_mean(pixels, axis=[1, 2, 3], keepdims=True)
    contrast = batch["contrast"][:, None, None, None]
    brightness = batch["brightness"][:, None, None, None]
    return tf.clip_by_value((pixels - mean) * contrast + mean + brightness, 0.0, 255.0)


def input_fn(
    dataset: FaceDataset, train: np.ndarray, config: TrainConfig, *, start_step: int
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """The per-worker dataset function for ``distribute_datasets_from_function``.

    Elements are ``(images, classes)``: float32 ``(P/replicas * K, S, S, 3)`` in 0..255 and
    int32 ArcFace classes.
    """
    classes = class_ids(len(dataset.identities), train)
    size = dataset.chip.size

    def build(context: tf.distribute.InputContext) -> tf.data.Dataset:
        import tensorflow as tf

        per_replica = context.get_per_replica_batch_size(config.global_batch)
        sampler = BalancedSampler(
            dataset.labels,
            train,
            p=per_replica // config.faces_per_identity,
            k=config.faces_per_identity,
            seed=(config.seed, context.input_pipeline_id, start_step),
        )
        n = per_replica

        def draws() -> Iterator[dict[str, np.ndarray]]:
            return (vars(batch) for batch in sampler)

        def gather(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return dataset.chips[indices], classes[dataset.labels[indices]]

        def load(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            images, labels = tf.numpy_function(
                gather, [batch["indices"]], (tf.uint8, tf.int32), stateful=False
            )
            images.set_shape([n, size, size, 3])
            labels.set_shape([n])
            return augment(images, batch), labels

        signature = {
            "indices": tf.TensorSpec([n], tf.int64),
            "boxes": tf.TensorSpec([n, 4], tf.float32),
            "brightness": tf.TensorSpec([n], tf.float32),
            "contrast": tf.TensorSpec([n], tf.float32),
        }
        draws_dataset = tf.data.Dataset.from_generator(draws, output_signature=signature)
        return draws_dataset.map(load).prefetch(2)

    return build
