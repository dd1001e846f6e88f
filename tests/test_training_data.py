"""A run's data: export from the gallery and from identity folders, the held-out split, the
P x K sampler and the tf.data pipeline built on it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facerank.embedding import LbpEmbedder
from facerank.faces import HaarFaceDetector
from facerank.faces.align import DLIB_CHIP_150, GALLERY_CROP_256, rechip
from facerank.gallery import EnrolledFace, Gallery, SourceRecord, face_id, identity_from_key
from facerank.pipeline import FacePipeline
from facerank.storage import FolderStore
from tests.plugins.faces import ASTRONAUT_FACE_BOX, encode, variant
from training.backbones import scaled_chip
from training.batches import BalancedSampler, class_ids
from training.config import TrainConfig
from training.data import (
    export_folder_dataset,
    export_gallery_dataset,
    read_dataset,
    split_by_identity,
    write_dataset,
)
from training.errors import TrainingDataError
from training.rundir import RunDir


def run_dir(tmp_path: Path, **overrides: object) -> tuple[TrainConfig, RunDir]:
    config = TrainConfig(run_id="r1", version="ft-test-r1", **overrides)  # type: ignore[arg-type]
    return config, RunDir.create(tmp_path / "shared", config)


def enroll(gallery: Gallery, key: str, crop: np.ndarray) -> None:
    record = SourceRecord(
        identity=identity_from_key(key),
        bucket="faces",
        key=key,
        etag="e1",
        faces_seen=1,
        enrolled_at=datetime.now(UTC),
        faces=(EnrolledFace(face_id("faces", key, "e1", 0), (0, 0, 90, 90), 0.9, "eyes"),),
    )
    gallery.enroll(record, [crop], {"lbp-v0": np.ones((1, 4), np.float32) / 2})


def test_gallery_export_rechips_every_enrolled_face(tmp_path: Path) -> None:
    gallery = Gallery(FolderStore(tmp_path / "buckets"), "gallery")
    gallery.ensure()
    rng = np.random.default_rng(0)
    crops = {
        f"{who}/{n}.jpg": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        for who in ("alice", "bob")
        for n in range(3)
    }
    for key, crop in crops.items():
        enroll(gallery, key, crop)
    _, run = run_dir(tmp_path)
    chip = scaled_chip(DLIB_CHIP_150, 64)
    assert export_gallery_dataset(gallery, run, chip, progress=False) == []
    dataset = read_dataset(run)
    assert dataset.chip == chip
    assert dataset.identities == ("alice", "bob")
    assert dataset.chips.shape == (6, 64, 64, 3)
    assert sorted(Counter(dataset.labels.tolist()).values()) == [3, 3]
    # each chip is its face's stored crop, re-chipped (PNG is lossless)
    by_face = {face_id("faces", key, "e1", 0): crop for key, crop in crops.items()}
    for source, chip_pixels, label in zip(
        dataset.sources, dataset.chips, dataset.labels, strict=True
    ):
        np.testing.assert_array_equal(chip_pixels, rechip(by_face[source], GALLERY_CROP_256, chip))
        owner = next(k for k in crops if face_id("faces", k, "e1", 0) == source)
        assert dataset.identities[label] == owner.split("/")[0]


def test_folder_export_aligns_each_photos_face_and_reports_skips(
    tmp_path: Path, astronaut: np.ndarray
) -> None:
    rng = np.random.default_rng(1)
    x, y, w, h = ASTRONAUT_FACE_BOX
    head = astronaut[y - h // 2 : y + h + h // 2, x - w // 2 : x + w + w // 2]
    for who in ("eileen", "collins"):
        (tmp_path / "set" / who).mkdir(parents=True)
        for n in range(2):
            (tmp_path / "set" / who / f"{n}.png").write_bytes(encode(variant(head, rng)))
    (tmp_path / "set" / "eileen" / "notes.txt").write_text("not a photo")
    (tmp_path / "set" / "collins" / "blank.png").write_bytes(
        encode(np.full((120, 120, 3), 128, np.uint8))
    )
    pipeline = FacePipeline(HaarFaceDetector(), LbpEmbedder(), align_mode="box")
    _, run = run_dir(tmp_path)
    skipped = export_folder_dataset(tmp_path / "set", pipeline, run, DLIB_CHIP_150, progress=False)
    assert sorted((Path(s.source).name, s.code) for s in skipped) == [
        ("blank.png", "no_face"),
        ("notes.txt", "not_an_image"),
    ]
    dataset = read_dataset(run)
    assert dataset.chips.shape == (4, 150, 150, 3)
    assert dataset.identities == ("collins", "eileen")
    # a chip is a face: its eye band is darker than its cheeks in every image
    gray = cv2.cvtColor(dataset.chips[0], cv2.COLOR_RGB2GRAY).astype(float)
    assert gray[40:55, 40:110].mean() < gray[70:90, 40:110].mean()


def test_dataset_must_be_complete(tmp_path: Path) -> None:
    _, run = run_dir(tmp_path)
    with pytest.raises(TrainingDataError, match="no complete dataset"):
        read_dataset(run)
    with pytest.raises(TrainingDataError, match="no face"):
        write_dataset(run, DLIB_CHIP_150, np.zeros((0, 150, 150, 3), np.uint8), [])


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 6), min_size=4, max_size=30),
    fraction=st.floats(0.05, 0.5),
    seed=st.integers(0, 2**16),
)
def test_split_never_trains_on_a_held_out_identity(
    counts: list[int], fraction: float, seed: int
) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    try:
        split = split_by_identity(labels, fraction, seed)
    except TrainingDataError:
        assert sum(c >= 2 for c in counts) < max(2, round(fraction * len(counts))) or (
            len(counts) - max(2, round(fraction * len(counts))) < 2
        )
        return
    assert np.intersect1d(split.train, split.heldout).size == 0
    assert np.union1d(split.train, split.heldout).tolist() == list(range(len(counts)))
    assert len(split.heldout) == max(2, round(fraction * len(counts)))
    assert all(counts[i] >= 2 for i in split.heldout)  # each held-out identity has a pair
    again = split_by_identity(labels, fraction, seed)
    assert again.heldout.tolist() == split.heldout.tolist()
    trained_faces = split.faces(labels, split.train)
    assert not np.isin(labels[trained_faces], split.heldout).any()


def test_sampler_draws_p_identities_times_k_faces() -> None:
    labels = np.repeat(np.arange(6), [1, 2, 5, 5, 8, 3])
    train = np.array([0, 1, 2, 4, 5])  # identity 3 is held out
    sampler = BalancedSampler(labels, train, p=3, k=4, seed=7)
    seen: Counter[int] = Counter()
    flips = 0
    for _ in range(200):
        batch = sampler.batch()
        groups = labels[batch.indices].reshape(3, 4)
        assert (groups == groups[:, :1]).all()  # K consecutive faces of one identity
        assert len(set(groups[:, 0])) == 3  # P distinct identities
        assert not np.isin(groups, [3]).any()
        for group, faces in zip(groups[:, 0], batch.indices.reshape(3, 4), strict=True):
            if (labels == group).sum() >= 4:
                assert len(set(faces)) == 4  # no repeats when the identity has K faces
            else:
                assert set(faces) == set(np.flatnonzero(labels == group))  # all, then repeats
        seen.update(groups[:, 0].tolist())
        flips += int((batch.boxes[:, 1] > batch.boxes[:, 3]).sum())
        sides = np.abs(batch.boxes[:, 3] - batch.boxes[:, 1])
        assert ((sides >= 0.9 - 1e-6) & (sides <= 1.0 + 1e-6)).all()
        assert (batch.boxes >= 0).all()
        assert (batch.boxes <= 1).all()
    assert set(seen) == {0, 1, 2, 4, 5}
    assert max(seen.values()) < 2 * min(seen.values())  # balanced over identities
    assert 0.4 < flips / (200 * 12) < 0.6  # half the faces flipped
    first, second = (BalancedSampler(labels, train, p=3, k=4, seed=7).batch() for _ in range(2))
    np.testing.assert_array_equal(first.indices, second.indices)  # reproducible by seed


def test_sampler_refuses_more_identities_than_exist() -> None:
    with pytest.raises(TrainingDataError, match="identities_per_batch"):
        BalancedSampler(np.array([0, 0, 1, 1]), np.array([0, 1]), p=3, k=2, seed=0)


def test_class_ids_number_only_trained_identities() -> None:
    np.testing.assert_array_equal(class_ids(5, np.array([0, 2, 4])), [0, -1, 1, -1, 2])


def test_input_pipeline_yields_each_replicas_share(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    from training.batches import input_fn

    config, run = run_dir(
        tmp_path,
        backbone="scratch",
        image_size=32,
        identities_per_batch=4,
        faces_per_identity=3,
        workers=2,
    )
    rng = np.random.default_rng(0)
    names = [f"p{i}" for i in range(6) for _ in range(4)]
    chips = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    write_dataset(run, scaled_chip(DLIB_CHIP_150, 32), chips, names)
    dataset = read_dataset(run)
    train = np.array([0, 1, 3, 4, 5])
    build = input_fn(dataset, train, config, start_step=0)
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    images, classes = next(iter(build(context)))
    assert images.shape == (6, 32, 32, 3)
    assert images.dtype == tf.float32
    assert float(tf.reduce_min(images)) >= 0
    assert float(tf.reduce_max(images)) <= 255
    classes = classes.numpy().reshape(2, 3)
    assert (classes == classes[:, :1]).all()
    assert set(classes[:, 0]) <= {0, 1, 2, 3, 4}
    other = next(iter(build(tf.distribute.InputContext(2, 0, 2))))[0]
    assert not np.allclose(images.numpy(), other.numpy())  # workers draw different batches
