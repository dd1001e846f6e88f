"""The open-set match threshold: a stranger should match nobody, however large the gallery.

A model's threshold is calibrated per pair (FAR 1 % between two faces). A stranger's query is
compared with every enrolled identity, and the predictor calls it a match when the *nearest*
one falls under the threshold: with N identities, the chance that one of them does grows like
``1 - (1 - FAR) ** N``. So the predictor calibrates per gallery: it measures how far enrolled
people are from the *other* identities (per face, the nearest face of each other identity, as
the search computes a stranger's distance to an identity), fits the upper tail of those
impostor cosines, and takes the distance under which a stranger's nearest of N identities
falls with probability ``target``: the per-identity tail ``1 - (1 - target) ** (1/N)``.
The result never exceeds the model's pair threshold, so a small gallery keeps it.

A fitted tail rather than the empirical quantile: the quantile wanted lies far out (1e-4 for
100 identities), where a few thousand samples say little. A generalised Pareto fit of the top
decile (peaks over threshold, extreme-value theory's usual tool) rather than a normal fit of
them all: measured on AT&T and LFW, a normal fit put the threshold far too low
(identification fell to 0.46 on LFW), and so, less, did an exponential tail (0.96 on AT&T),
since similarities are bounded and their tail is lighter than either assumes.

The Pareto tail is fitted by maximum likelihood, not by the method of moments: on LFW people
the identify benchmark never uses (View 1's people with 3 to 5 photos, the first half enrolled
with 2 photos: 177 identities, 256 stranger photos; ``bench/bench_openset.py``), moments
estimated the tail's shape too short and put the threshold at 0.358, where 6.2 % of the
strangers matched someone, against the 1 % asked; maximum likelihood put it at 0.304, 0.8 %.
On the identify benchmark's smaller galleries (20 and 25 identities) both give the same
threshold to 0.001. ``bench/bench_identify.py`` reports the false matches on real strangers.
"""

from __future__ import annotations

import numpy as np

from facerank.gallery.index import EmbeddingIndex
from facerank.settings import Settings

MAX_PROBES = 1000
"""Enrolled faces measured against the other identities (a sample of larger galleries)."""
MAX_TARGET_FACES = 20_000
"""Gallery faces those probes are compared with: the cost stays one bounded matrix product."""
MIN_SAMPLES = 50
TAIL = 0.1
"""Share of the impostor similarities whose excesses the tail is fitted to."""
MAX_EXCESSES = 10_000
"""Excesses the tail's fit reads at most (evenly spaced order statistics of more)."""
_NEGATIVE_STEPS = -1.0 + np.geomspace(1e-4, 1.0, 400, endpoint=False)
_POSITIVE_STEPS = np.geomspace(1e-4, 100.0, 400)
"""The grid of ``b * max(excess)`` the Pareto fit searches: from just above -1 (where
``log1p`` would reach minus infinity) to 100, dense near 0 and near -1."""


def open_set_threshold(
    vectors: np.ndarray,
    identities: np.ndarray,
    *,
    pair_threshold: float,
    target: float,
    seed: int = 0,
) -> float:
    """The largest distance that still calls a query a match, for this gallery.

    ``vectors``: unit rows; ``identities``: an identity code per row. ``target``: the chance
    a stranger may match some identity; 0 keeps ``pair_threshold``.
    """
    codes = np.unique(identities)
    if target <= 0 or len(codes) < 2:
        return pair_threshold
    impostors = impostor_similarities(vectors, identities, seed=seed)
    if len(impostors) < MIN_SAMPLES:
        return pair_threshold
    per_identity = 1.0 - (1.0 - target) ** (1.0 / len(codes))
    cosine = min(1.0, tail_quantile(impostors, per_identity))
    return float(min(pair_threshold, np.sqrt(max(0.0, 2.0 - 2.0 * cosine))))


def index_threshold(index: EmbeddingIndex, pair_threshold: float, settings: Settings) -> float:
    """The threshold a predictor will decide ``match`` at for ``index``'s model (whose pair
    threshold is ``pair_threshold``) and gallery,
    computed from the index before any predictor serves it: the model switch groups unknown
    faces with the new version before making it active (:meth:`UnknownFaces.follow
    <facerank.unknown.UnknownFaces.follow>`). The explicit ``match_threshold`` when set, as
    the predictor does; else :func:`open_set_threshold` of a sample drawn as the predictor
    draws it (all faces of a gallery of up to :data:`MAX_TARGET_FACES`), which differs from
    the predictor's only in which probes a gallery of more than :data:`MAX_PROBES` faces
    picks, since it holds the segments in another order."""
    if settings.match_threshold:
        return settings.match_threshold
    vectors, identities = index_sample(index, MAX_TARGET_FACES)
    return open_set_threshold(
        vectors,
        identities,
        pair_threshold=pair_threshold,
        target=settings.open_set_far,
    )


def index_sample(index: EmbeddingIndex, limit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` faces of ``index`` (all of a smaller gallery, else drawn at random):
    unit rows and an identity code per row. Segments are read one at a time and only the
    drawn rows kept, so a large gallery costs its reads but never its size in memory."""
    manifest, _ = index.read()
    total = manifest.rows
    rng = np.random.default_rng(seed)
    wanted = np.arange(total) if total <= limit else np.sort(rng.choice(total, limit, False))
    vectors, names, start = [], [], 0
    for ref in manifest.segments:
        rows = wanted[(wanted >= start) & (wanted < start + ref.rows)] - start
        start += ref.rows
        if len(rows):
            segment = index.load(ref.name)
            vectors.append(np.asarray(segment.vectors)[rows])
            names.extend(segment.names[c] for c in segment.codes[rows].tolist())
    if not vectors:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    identities = np.unique(np.array(names, dtype=str), return_inverse=True)[1]
    return np.concatenate(vectors).astype(np.float32, copy=False), identities.reshape(-1)


def tail_quantile(samples: np.ndarray, exceed: float) -> float:
    """The value ``samples`` exceed with probability ``exceed``: the empirical quantile where
    the samples reach that far, beyond it a generalised Pareto fit of their top decile's
    excesses (peaks over threshold)."""
    high = float(np.quantile(samples, 1.0 - TAIL))
    if exceed >= TAIL:
        return float(np.quantile(samples, 1.0 - exceed))
    excess = samples[samples > high] - high
    if len(excess) < 2 or float(np.var(excess)) == 0.0:
        return high
    shape, scale = pareto_fit(excess)
    ratio = TAIL / exceed
    if abs(shape) < 1e-6:
        return high + scale * float(np.log(ratio))
    return high + scale / shape * (ratio**shape - 1.0)


def pareto_fit(excess: np.ndarray) -> tuple[float, float]:
    """Shape and scale of a generalised Pareto distribution fitted to positive ``excess`` by
    maximum likelihood, profiled over ``b = shape / scale`` (Grimshaw 1993): for each ``b``
    the likely shape is ``mean(log1p(b * excess))``, leaving a one-dimensional search, done
    on a fixed grid. Shapes below -1 are left out: there the likelihood grows without bound
    (a similarity's bounded tail makes them tempting). More than :data:`MAX_EXCESSES` values
    are thinned to evenly spaced order statistics, which keeps the fit's cost bounded."""
    values = np.sort(np.asarray(excess, dtype=np.float64))
    if len(values) > MAX_EXCESSES:
        values = values[np.linspace(0, len(values) - 1, MAX_EXCESSES).round().astype(int)]
    count, largest = len(values), float(values[-1])
    steps = np.concatenate([_NEGATIVE_STEPS, _POSITIVE_STEPS])
    rates = steps / largest
    shapes = np.log1p(rates[:, None] * values[None, :]).mean(axis=1)
    likelihood = np.where(shapes >= -1.0, -count * (np.log(shapes / rates) + 1.0 + shapes), -np.inf)
    best = int(np.argmax(likelihood))
    return float(shapes[best]), float(shapes[best] / rates[best])


def impostor_similarities(
    vectors: np.ndarray, identities: np.ndarray, *, seed: int = 0
) -> np.ndarray:
    """Per probe face and other identity: the cosine of that identity's nearest face."""
    rng = np.random.default_rng(seed)
    rows = len(vectors)
    probes = rng.choice(rows, min(rows, MAX_PROBES), replace=False)
    targets = np.sort(rng.choice(rows, min(rows, MAX_TARGET_FACES), replace=False))
    target_ids = identities[targets]
    order = np.argsort(target_ids, kind="stable")
    targets, target_ids = targets[order], target_ids[order]
    codes, starts = np.unique(target_ids, return_index=True)
    sims = np.clip(vectors[probes] @ vectors[targets].T, -1.0, 1.0)
    best = np.maximum.reduceat(sims, starts, axis=1)
    others = identities[probes][:, None] != codes[None, :]
    return best[others]
