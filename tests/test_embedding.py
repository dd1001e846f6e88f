"""Embedders: the contract (shape, dtype, unit norm, version, chip check) and ranking quality."""

from __future__ import annotations

import numpy as np
import pytest

from facerank.embedding import LbpEmbedder, load_embedder
from facerank.errors import ChipShapeError, ModelLoadError
from tests.plugins.faces import labelled_chips


def rank1(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out rank-1 identification rate with Euclidean distance."""
    distances = ((vectors[:, None, :] - vectors[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(distances, np.inf)
    return float((labels[distances.argmin(axis=1)] == labels).mean())


def test_lbp_contract(lfw_faces: np.ndarray) -> None:
    embedder = LbpEmbedder()
    chips, _ = labelled_chips(lfw_faces[:3], embedder.chip.size, per_identity=2)
    vectors = embedder.embed(chips)
    assert embedder.model_version == "lbp-v0"
    assert vectors.shape == (6, embedder.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert embedder.embed(chips[:0]).shape == (0, embedder.dim)


def test_lbp_ranks_re_shot_faces_to_their_identity(lfw_faces: np.ndarray) -> None:
    """30 people x 4 re-shots each: nearly every probe's nearest neighbour is the same person.

    Chance is 3/119; a broken descriptor (constant, random, or blind to the face) scores near it.
    """
    embedder = LbpEmbedder()
    chips, labels = labelled_chips(lfw_faces[:30], embedder.chip.size, per_identity=4)
    assert rank1(embedder.embed(chips), labels) >= 0.9


def test_lbp_is_insensitive_to_exposure(lfw_faces: np.ndarray) -> None:
    """LBP compares neighbours, so a global brightness change barely moves the vector."""
    embedder = LbpEmbedder()
    chips, _ = labelled_chips(lfw_faces[:2], embedder.chip.size, per_identity=1)
    darker = (chips.astype(np.float32) * 0.7).round().astype(np.uint8)
    same = np.linalg.norm(embedder.embed(chips[:1]) - embedder.embed(darker[:1]))
    other = np.linalg.norm(embedder.embed(chips[:1]) - embedder.embed(chips[1:2]))
    assert same < 0.5 * other


def test_lbp_is_deterministic_and_batch_independent(lfw_faces: np.ndarray) -> None:
    embedder = LbpEmbedder()
    chips, _ = labelled_chips(lfw_faces[:5], embedder.chip.size, per_identity=1)
    together = embedder.embed(chips)
    one_by_one = np.concatenate([embedder.embed(chips[i : i + 1]) for i in range(len(chips))])
    np.testing.assert_array_equal(together, one_by_one)


@pytest.mark.parametrize(
    "chips",
    [
        np.zeros((1, 100, 100, 3), np.uint8),
        np.zeros((1, 112, 112), np.uint8),
        np.zeros((1, 112, 112, 3), np.float32),
    ],
    ids=["wrong-size", "no-channels", "float"],
)
def test_chips_not_aligned_for_the_embedder_are_refused(chips: np.ndarray) -> None:
    with pytest.raises(ChipShapeError, match="expected uint8 chips of shape"):
        LbpEmbedder().embed(chips)


def test_load_embedder_by_name() -> None:
    assert load_embedder("lbp-v0").model_version == "lbp-v0"
    with pytest.raises(ModelLoadError, match="unknown model 'nope'"):
        load_embedder("nope")
