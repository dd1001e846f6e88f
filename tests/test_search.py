"""Vectorised search against a brute-force reference, plus its edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facerank.gallery import Segment
from inference.approximate import ApproximateSegment
from inference.search import GalleryIndex, search
from inference.snapshot import GallerySnapshot


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def reference(face_ids, identities, vectors, query, k):
    """Plain Python: best face per identity, sorted by distance, then identity name."""
    best: dict[str, tuple[float, str]] = {}
    for face, identity, vector in zip(face_ids, identities, vectors, strict=True):
        cos = min(1.0, max(-1.0, float(np.dot(query, vector))))
        if identity not in best or cos > best[identity][0]:
            best[identity] = (cos, face)
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:k]
    return [(i, f, math.sqrt(max(0.0, 2 - 2 * c))) for i, (c, f) in ranked]


@pytest.mark.parametrize("k", [1, 3, 7, 50])
def test_matches_brute_force_reference(k: int) -> None:
    rng = np.random.default_rng(k)
    vectors = unit_rows(rng, 200, 16)
    identities = [f"id{rng.integers(30):02d}" for _ in range(200)]
    face_ids = [f"face{n:03d}" for n in range(200)]
    queries = unit_rows(rng, 5, 16)
    index = GalleryIndex.build(face_ids, identities, vectors)
    results = search(index, queries, k, threshold=1.0)
    assert len(results) == len(queries)
    for query, got in zip(queries, results, strict=True):
        want = reference(face_ids, identities, vectors, query, k)
        assert [(m.identity, m.face_id) for m in got] == [(i, f) for i, f, _ in want]
        assert [m.distance for m in got] == pytest.approx([d for *_, d in want], abs=1e-5)
        for m in got:
            assert m.similarity == pytest.approx(1 - m.distance**2 / 2, abs=1e-5)
            assert m.match == (m.distance <= 1.0)


def test_each_identity_appears_once_through_its_closest_face() -> None:
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    vectors = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [0.8, 0.6]], dtype=np.float32)
    index = GalleryIndex.build(["a1", "a2", "b1", "b2"], ["alice", "alice", "bob", "bob"], vectors)
    [matches] = search(index, query, k=5, threshold=0.6)
    assert [(m.identity, m.face_id) for m in matches] == [("alice", "a2"), ("bob", "b2")]
    assert matches[0].distance == pytest.approx(0.0)
    assert matches[0].match
    assert matches[1].similarity == pytest.approx(0.8)


def test_ties_rank_by_identity_name_then_face_id_even_at_the_cut() -> None:
    vectors = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (6, 1))
    identities = ["zoe", "carl", "bea", "bea", "adam", "dan"]
    face_ids = ["z", "c", "b2", "b1", "a", "d"]
    index = GalleryIndex.build(face_ids, identities, vectors)
    for k in (1, 2, 3, 5):
        [matches] = search(index, vectors[:1], k, threshold=0.6)
        expected = ["adam", "bea", "carl", "dan", "zoe"][:k]
        assert [m.identity for m in matches] == expected
    [matches] = search(index, vectors[:1], 2, threshold=0.6)
    assert matches[1].face_id == "b1"


def test_threshold_decides_match() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    index = GalleryIndex.build(["a", "b"], ["near", "far"], vectors)
    [matches] = search(index, np.array([[1.0, 0.0]], dtype=np.float32), k=2, threshold=0.5)
    assert [(m.identity, m.match) for m in matches] == [("near", True), ("far", False)]
    assert matches[1].distance == pytest.approx(math.sqrt(2))


def test_empty_gallery_answers_an_empty_list_per_query() -> None:
    index = GalleryIndex.build([], [], np.zeros((0, 0), dtype=np.float32))
    assert search(index, unit_rows(np.random.default_rng(0), 3, 8), k=3, threshold=0.6) == [
        [],
        [],
        [],
    ]


def test_no_queries_answers_nothing() -> None:
    index = GalleryIndex.build(["a"], ["alice"], np.array([[1.0, 0.0]], dtype=np.float32))
    assert search(index, np.zeros((0, 2), dtype=np.float32), k=3, threshold=0.6) == []


def test_k_larger_than_identities_returns_every_identity() -> None:
    rng = np.random.default_rng(1)
    index = GalleryIndex.build(["a", "b", "c"], ["x", "y", "x"], unit_rows(rng, 3, 4))
    [matches] = search(index, unit_rows(rng, 1, 4), k=100, threshold=0.6)
    assert sorted(m.identity for m in matches) == ["x", "y"]


def test_invalid_arguments_are_refused() -> None:
    index = GalleryIndex.build(["a"], ["alice"], np.array([[1.0, 0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="k must be positive"):
        search(index, np.array([[1.0, 0.0]], dtype=np.float32), k=0, threshold=0.6)
    with pytest.raises(ValueError, match="dimension"):
        search(index, np.ones((1, 3), dtype=np.float32), k=1, threshold=0.6)
    with pytest.raises(ValueError, match="same faces"):
        GalleryIndex.build(["a", "b"], ["alice"], np.ones((2, 2), dtype=np.float32))


def test_index_is_immutable() -> None:
    index = GalleryIndex.build(["a"], ["alice"], np.array([[1.0, 0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="read-only"):
        index.vectors[0, 0] = 2.0


def test_a_snapshot_samples_every_segment_with_identities_shared_across_them() -> None:
    """The open-set calibration sees one identity split over segments (and approximate ones,
    their float16 rows) as one identity."""
    rng = np.random.default_rng(3)
    names = ["ann", "bob", "cy"]
    first = Segment.build(
        [f"a{i}" for i in range(6)], [names[i % 2] for i in range(6)], unit_rows(rng, 6, 8)
    )
    second = Segment.build(
        [f"b{i}" for i in range(6)], [names[1 + i % 2] for i in range(6)], unit_rows(rng, 6, 8)
    )
    snapshot = GallerySnapshot("v", (first, ApproximateSegment.build(second)))
    vectors, codes = snapshot.sample(100)
    assert np.allclose(vectors, np.concatenate([first.vectors, second.vectors]), atol=1e-3)
    expected = [first.identity(r) for r in range(6)] + [second.identity(r) for r in range(6)]
    assert [sorted(set(expected))[c] for c in codes] == expected
    few, few_codes = snapshot.sample(5)
    assert len(few) == len(few_codes) == 5
    assert all(any(np.allclose(row, v, atol=1e-3) for v in vectors) for row in few)
