"""The open-set threshold: strangers against a gallery of N identities match at most ``target``.

Embeddings are drawn at random on a sphere, people as tight clusters, so how many strangers a
threshold lets through can be counted exactly and compared with what was asked for.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from facerank.gallery.index import EmbeddingIndex
from facerank.gallery.segments import Segment
from facerank.openset import (
    impostor_similarities,
    index_sample,
    index_threshold,
    open_set_threshold,
    pareto_fit,
    tail_quantile,
)
from facerank.settings import Settings
from facerank.storage import FolderStore

DIM = 32


def people(count: int, faces: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``faces`` unit vectors around each of ``count`` random centres, and their codes."""
    centres = rng.normal(size=(count, DIM))
    vectors = np.repeat(centres, faces, axis=0) + rng.normal(scale=0.25, size=(count * faces, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.repeat(np.arange(count), faces)


def stranger_match_rate(vectors: np.ndarray, threshold: float, rng: np.random.Generator) -> float:
    strangers, _ = people(2000, 1, rng)
    nearest = np.sqrt(np.maximum(0, 2 - 2 * (strangers @ vectors.T).max(axis=1)))
    return float(np.mean(nearest <= threshold))


@pytest.mark.parametrize(("identities", "bound"), [(10, 0.15), (100, 0.03), (400, 0.03)])
def test_strangers_match_about_as_often_as_asked_whatever_the_gallery_size(
    identities: int, bound: float
) -> None:
    """Averaged over six galleries drawn at random, since one draw of a small gallery says
    little: at 10 identities of 3 faces the tail is fitted to 27 excesses of 270 impostor
    similarities and must reach a per-identity rate of 1e-3, so a draw gives 7 % to 20 %;
    from 100 identities on (1e-4 to 2.5e-5 per identity) the mean was 1.5 %, near the 1 %
    asked."""
    pair = 1.3  # generous: on its own it lets many strangers through in a large gallery
    rates, pair_rates = [], []
    for draw in range(6):
        rng = np.random.default_rng(draw * 1000 + identities)
        vectors, codes = people(identities, 3, rng)
        threshold = open_set_threshold(vectors, codes, pair_threshold=pair, target=0.01)
        assert threshold < pair
        rates.append(stranger_match_rate(vectors, threshold, rng))
        pair_rates.append(stranger_match_rate(vectors, pair, rng))
    assert np.mean(rates) <= bound
    assert np.mean(pair_rates) > 3 * np.mean(rates)


def test_rarer_tails_lie_further_out_and_the_fit_follows_the_data() -> None:
    """More identities ask for a rarer per-identity tail, hence a higher similarity."""
    rng = np.random.default_rng(1)
    samples = rng.normal(0.2, 0.1, 20_000)
    quantiles = [tail_quantile(samples, q) for q in (0.2, 1e-2, 1e-3, 1e-4)]
    assert quantiles == sorted(quantiles)
    assert quantiles[0] == pytest.approx(np.quantile(samples, 0.8))  # empirical where it can
    exact = 0.2 + 0.1 * 3.09  # the normal's 1e-3 tail
    assert quantiles[2] == pytest.approx(exact, abs=0.03)


@pytest.mark.parametrize(("shape", "scale"), [(-0.4, 0.02), (-0.1, 0.01), (0.2, 0.05)])
def test_the_pareto_fit_recovers_the_tail_it_is_given(shape: float, scale: float) -> None:
    """Maximum likelihood on draws of a known generalised Pareto (by its inverse CDF)."""
    uniform = np.random.default_rng(5).random(5000)
    draws = scale / shape * ((1.0 - uniform) ** -shape - 1.0)
    fitted_shape, fitted_scale = pareto_fit(draws)
    assert fitted_shape == pytest.approx(shape, abs=0.05)
    assert fitted_scale == pytest.approx(scale, rel=0.1)


def test_the_pair_threshold_bounds_it_and_stays_for_one_identity_or_no_target() -> None:
    rng = np.random.default_rng(2)
    vectors, codes = people(20, 3, rng)
    assert open_set_threshold(vectors, codes, pair_threshold=0.1, target=0.01) == 0.1
    assert open_set_threshold(vectors, codes, pair_threshold=0.9, target=0.0) == 0.9
    one, one_code = people(1, 5, rng)
    assert open_set_threshold(one, one_code, pair_threshold=0.9, target=0.01) == 0.9


def test_impostors_are_other_identities_only() -> None:
    rng = np.random.default_rng(3)
    vectors, codes = people(5, 4, rng)
    cosines = impostor_similarities(vectors, codes)
    assert len(cosines) == 20 * 4  # each face against the 4 other identities
    assert cosines.max() < vectors[0] @ vectors[1]  # a genuine pair is closer than any


def test_the_switch_computes_from_the_index_what_a_predictor_serves(tmp_path: Path) -> None:
    """:func:`index_threshold` reads the index segment by segment; over the same faces it is
    the threshold of the whole gallery, and a drawn sample keeps each row's identity."""
    rng = np.random.default_rng(4)
    vectors, codes = people(30, 4, rng)
    store = FolderStore(tmp_path)
    store.ensure_bucket("gallery")
    index = EmbeddingIndex(store, "gallery", "v1")
    names = [f"person-{c:02d}" for c in codes]
    for part in np.array_split(np.arange(len(vectors)), 3):  # three segments
        index.apply(Segment.build([f"f{i}" for i in part], [names[i] for i in part], vectors[part]))
    pair = 1.3
    settings = Settings(data_dir=tmp_path, open_set_far=0.01)
    whole = open_set_threshold(vectors, codes, pair_threshold=pair, target=0.01)
    assert whole < pair  # the gallery's size lowered it
    assert index_threshold(index, pair, settings) == pytest.approx(whole, abs=1e-6)
    fixed = Settings(data_dir=tmp_path, match_threshold=0.3)
    assert index_threshold(index, pair, fixed) == 0.3

    sample, sample_codes = index_sample(index, 50)
    assert sample.shape == (50, DIM)
    by_row = {vectors[i].tobytes(): names[i] for i in range(len(vectors))}
    sampled_names = [by_row[row.tobytes()] for row in sample]
    for a, b in itertools.combinations(range(50), 2):  # one code per identity, and only one
        assert (sample_codes[a] == sample_codes[b]) == (sampled_names[a] == sampled_names[b])
