"""Flip averaging and concatenation: what they compute, on small nets whose outputs we know."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skdata

from facerank.descriptor.catalogue import DESCRIPTORS, Ensemble
from facerank.descriptor.ensemble import Concatenated, FlipAveraged, chip_to_chip
from facerank.faces.align import DLIB_CHIP_150, VGGFACE2_CHIP_224, ChipSpec, rechip

tf = pytest.importorskip("tensorflow")

SHARED = ChipSpec(
    240,
    (VGGFACE2_CHIP_224.left_eye[0] + 8, VGGFACE2_CHIP_224.left_eye[1] + 1),
    (VGGFACE2_CHIP_224.right_eye[0] + 8, VGGFACE2_CHIP_224.right_eye[1] + 1),
)
"""VGGFACE2_CHIP_224 shifted by whole pixels inside a larger chip: a part cut out exactly."""


def column_means(images: object) -> object:
    """A 'descriptor' that changes under mirroring: each column's mean grey value."""
    return tf.reduce_mean(images, axis=[1, 3])


def corner_pixel(images: object) -> object:
    """A 'descriptor' that reads where a warp put things: the top-left 2x2 pixels."""
    return tf.reshape(images[:, :2, :2, :], [-1, 12]) + 1.0


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def test_flip_averaging_adds_the_unit_descriptors_of_both_views() -> None:
    images = np.random.default_rng(1).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    ours = np.asarray(FlipAveraged(column_means)(tf.constant(images)))
    plain = np.asarray(column_means(images))
    mirrored = np.asarray(column_means(images[:, :, ::-1]))
    np.testing.assert_allclose(ours, unit(plain) + unit(mirrored), rtol=1e-5)
    assert not np.allclose(unit(plain), unit(mirrored))  # the net does see the mirror


def test_the_warp_between_layouts_is_aligns_own() -> None:
    """TensorFlow's warp and OpenCV's (``rechip``) agree up to OpenCV's uint8 rounding and
    fixed-point weights: same pixel centres, same direction, same black border."""
    source = SHARED
    crop = np.ascontiguousarray(skdata.astronaut()[20:260, 120:360])
    for target in (DLIB_CHIP_150, ChipSpec(112, (36.0, 50.0), (76.0, 56.0))):  # no pyrDown
        theirs = rechip(crop, source, target).astype(np.float32)
        transform = chip_to_chip(source, target)
        assert transform is not None
        ours = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.constant(crop[None].astype(np.float32)),
            transforms=tf.constant(transform[None]),
            output_shape=tf.constant([target.size, target.size]),
            fill_value=tf.constant(0.0),
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        ).numpy()[0]
        difference = np.abs(ours - theirs)
        assert difference.mean() < 0.5
        assert difference.max() < 4


def test_a_part_in_a_whole_pixel_shift_of_the_shared_chip_is_cut_out_exactly() -> None:
    transform = chip_to_chip(SHARED, VGGFACE2_CHIP_224)
    assert transform is not None
    np.testing.assert_allclose(transform, [1, 0, 8, 0, 1, 1, 0, 0], atol=1e-6)
    assert chip_to_chip(DLIB_CHIP_150, DLIB_CHIP_150) is None


def test_concatenation_is_each_parts_unit_descriptor_of_its_own_chip() -> None:
    chips = np.random.default_rng(2).uniform(0, 255, (2, 240, 240, 3)).astype(np.float32)
    whole = Concatenated(
        [(column_means, VGGFACE2_CHIP_224), (corner_pixel, VGGFACE2_CHIP_224)],
        SHARED,
    )
    ours = np.asarray(whole(tf.constant(chips)))
    cut = chips[:, 1:225, 8:232]  # VGGFACE2_CHIP_224 inside COMBINED_CHIP_240
    expected = np.concatenate(
        [unit(np.asarray(column_means(cut))), unit(np.asarray(corner_pixel(cut)))], axis=1
    ) / np.sqrt(2)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)


def test_every_combination_holds_its_parts_chips_whole() -> None:
    """Each part's chip, warped out of the combination's, never reaches past its border."""
    combinations = [e for e in DESCRIPTORS.values() if isinstance(e, Ensemble)]
    assert combinations
    for entry in combinations:
        for part in entry.parts:
            spec = DLIB_CHIP_150 if part == "dlib-r34-v1" else DESCRIPTORS[part].chip
            transform = chip_to_chip(entry.chip, spec)
            if transform is None:
                continue
            matrix = transform[:6].reshape(2, 3)
            corners = np.array(
                [[0, 0, 1], [spec.size, 0, 1], [0, spec.size, 1], [spec.size] * 2 + [1]]
            )
            inside = corners @ matrix.T
            assert (inside >= -0.5).all(), (entry.version, part)
            assert (inside <= entry.chip.size + 0.5).all(), (entry.version, part)


def test_a_concatenation_needs_parts() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        Concatenated([], SHARED)
