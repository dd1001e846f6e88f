"""Identification and verification metrics from a distance matrix, in pure NumPy.

Why one module: ``facerank eval`` compares embedders with these numbers, and training promotes a
candidate model only if it beats the active one on held-out identities by the same numbers, so
both must compute them identically. Everything is vectorised over the N x N distance matrix
(thousands of faces, millions of pairs, no Python loop over pairs), and the ROC comes from the
sorted genuine and impostor distances: exact at every distinct distance, not sampled by a sweep
over guessed thresholds.

Conventions, chosen to match the predictor:

* a pair is *accepted* (called the same person) when ``distance <= threshold``;
* identification is leave-one-out: each face is a probe against all other faces, and the
  *identities* are ranked by their closest face, as the predictor's answer is. A face whose
  identity has no other face is no probe, only a distractor in the others' galleries;
* ties count against the probe: an identity exactly as close as the true one ranks ahead of it,
  so an embedder that maps every face to the same vector scores rank-1 = 0, not 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from facerank.evaluation.errors import EvaluationError

FAR_TARGETS = (1e-2, 1e-3)
"""False accept rates at which the true accept rate is reported by default."""

WORST_PROBES = 10
"""How many of the hardest probes :func:`evaluate_distances` lists by default."""


@dataclass(frozen=True)
class OperatingPoint:
    """Verification at one threshold: pairs with ``distance <= threshold`` are accepted."""

    threshold: float
    tar: float
    """Accepted genuine (same identity) pairs / all genuine pairs."""
    far: float
    """Accepted impostor (different identity) pairs / all impostor pairs."""
    accuracy: float
    """Correct decisions (genuine accepted, impostor rejected) / all pairs."""

    def to_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Roc:
    """The exact ROC over all pairs: point ``k`` accepts pairs with distance <= ``thresholds[k]``.

    ``thresholds`` are the distinct pair distances in ascending order, preceded by one value
    below them all (point 0 accepts nothing), so every achievable operating point is present.
    """

    thresholds: np.ndarray
    genuine_accepted: np.ndarray
    impostor_accepted: np.ndarray
    genuine_pairs: int
    impostor_pairs: int

    @classmethod
    def from_pairs(cls, genuine: np.ndarray, impostor: np.ndarray) -> Roc:
        """The ROC of genuine and impostor pair distances; both must be non-empty."""
        genuine, impostor = np.sort(genuine), np.sort(impostor)
        distinct = np.unique(np.concatenate([genuine, impostor]))
        thresholds = np.concatenate([[np.nextafter(distinct[0], -np.inf)], distinct])
        return cls(
            thresholds=thresholds,
            genuine_accepted=np.searchsorted(genuine, thresholds, side="right"),
            impostor_accepted=np.searchsorted(impostor, thresholds, side="right"),
            genuine_pairs=len(genuine),
            impostor_pairs=len(impostor),
        )

    @property
    def tar(self) -> np.ndarray:
        return self.genuine_accepted / self.genuine_pairs

    @property
    def far(self) -> np.ndarray:
        return self.impostor_accepted / self.impostor_pairs

    def point(self, k: int, threshold: float | None = None) -> OperatingPoint:
        """Point ``k``, reported at ``threshold`` (default: its own, the tightest one)."""
        genuine, impostor = int(self.genuine_accepted[k]), int(self.impostor_accepted[k])
        correct = genuine + self.impostor_pairs - impostor
        return OperatingPoint(
            threshold=float(self.thresholds[k] if threshold is None else threshold),
            tar=genuine / self.genuine_pairs,
            far=impostor / self.impostor_pairs,
            accuracy=correct / (self.genuine_pairs + self.impostor_pairs),
        )

    def at_threshold(self, threshold: float) -> OperatingPoint:
        """What accepting ``distance <= threshold`` gives."""
        k = int(np.searchsorted(self.thresholds, threshold, side="right")) - 1
        return self.point(max(k, 0), threshold)

    def at_far(self, target: float) -> OperatingPoint:
        """The highest TAR whose FAR does not exceed ``target``, at its tightest threshold.

        Compared in pair counts, so 29 false accepts of 100 meet a 0.29 target although
        ``0.29 * 100`` is 28.999999999999996 in floating point.
        """
        allowed = np.floor(target * self.impostor_pairs + 1e-9)
        k = int(np.searchsorted(self.impostor_accepted, allowed, side="right")) - 1
        return self.point(k)

    def sampled(self, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """``(far, tar)`` of the best points at ``points`` log-spaced FARs from one false
        accept to all: a compact curve for plots and reports (the full ROC has a point per
        distinct pair distance)."""
        allowed = np.unique(np.floor(np.geomspace(1, self.impostor_pairs, points)))
        k = np.searchsorted(self.impostor_accepted, allowed, side="right") - 1
        return (
            self.impostor_accepted[k] / self.impostor_pairs,
            self.genuine_accepted[k] / self.genuine_pairs,
        )

    def best_accuracy(self) -> OperatingPoint:
        """The point of highest accuracy (the lowest such threshold on a tie)."""
        correct = self.genuine_accepted + self.impostor_pairs - self.impostor_accepted
        return self.point(int(np.argmax(correct)))


@dataclass(frozen=True)
class Probe:
    """One leave-one-out probe: where its identity ranked, and its nearest faces."""

    index: int
    rank: int
    """1 + the number of other identities with a face at least as close as the nearest genuine."""
    genuine_index: int
    genuine_distance: float
    impostor_index: int
    impostor_distance: float

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Metrics:
    """Everything :func:`evaluate_distances` measures; ``to_json`` leaves out the full ROC."""

    faces: int
    identities: int
    probes: int
    """Faces whose identity has another face: the ones rank-1 and rank-5 are averaged over."""
    rank1: float
    rank5: float
    genuine_pairs: int
    impostor_pairs: int
    best: OperatingPoint
    """The highest verification accuracy over all thresholds, and the threshold giving it."""
    at_threshold: OperatingPoint | None
    """At the configured threshold (``None`` when none was given)."""
    tar_at_far: tuple[tuple[float, OperatingPoint], ...]
    """``(far_target, point)`` for each requested FAR target."""
    worst_probes: tuple[Probe, ...]
    """The hardest probes: lowest-ranked first, then the farthest nearest genuine face."""
    roc: Roc = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "faces": self.faces,
            "identities": self.identities,
            "probes": self.probes,
            "rank1": self.rank1,
            "rank5": self.rank5,
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            "best": self.best.to_json(),
            "at_threshold": None if self.at_threshold is None else self.at_threshold.to_json(),
            "tar_at_far": [
                {"far_target": target, **point.to_json()} for target, point in self.tar_at_far
            ],
            "worst_probes": [probe.to_json() for probe in self.worst_probes],
        }


def pairwise_distances(vectors: np.ndarray) -> np.ndarray:
    """Euclidean distances between all rows, ``(N, N)`` float64, exactly symmetric, zero diagonal.

    One Gram matrix product in float64, so near-identical faces do not tie or swap order through
    float32 cancellation in ``|a|^2 + |b|^2 - 2ab``.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise ValueError(f"expected a finite (N, dim) array of vectors, got shape {vectors.shape}")
    squares = np.einsum("ij,ij->i", vectors, vectors)
    upper = np.triu(squares[:, None] + squares[None, :] - 2.0 * (vectors @ vectors.T), k=1)
    return np.sqrt(np.maximum(upper + upper.T, 0.0))


def evaluate_embeddings(
    vectors: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    *,
    threshold: float | None = None,
    far_targets: Sequence[float] = FAR_TARGETS,
    worst: int = WORST_PROBES,
) -> Metrics:
    """:func:`evaluate_distances` of the Euclidean distances between ``vectors`` (unit rows)."""
    return evaluate_distances(
        pairwise_distances(vectors),
        labels,
        threshold=threshold,
        far_targets=far_targets,
        worst=worst,
    )


def evaluate_distances(
    distances: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    *,
    threshold: float | None = None,
    far_targets: Sequence[float] = FAR_TARGETS,
    worst: int = WORST_PROBES,
) -> Metrics:
    """Leave-one-out identification and all-pairs verification of faces labelled ``labels``.

    ``distances`` is a symmetric ``(N, N)`` matrix (its diagonal is ignored); ``labels`` holds
    one identity per face (strings or integers). Raises :class:`EvaluationError` when the faces
    span fewer than two identities or no identity has two faces: no metric is defined then.
    """
    matrix = _checked(distances, len(labels))
    names, identity = np.unique(np.asarray(labels), return_inverse=True)
    identity = identity.ravel()
    if len(names) < 2:
        raise EvaluationError(f"{len(labels)} faces of {len(names)} identity: need at least two")
    np.fill_diagonal(matrix, np.inf)
    nearest = _nearest_per_identity(matrix, identity, len(names))
    genuine_best = nearest[np.arange(len(identity)), identity]
    is_probe = np.isfinite(genuine_best)
    if not is_probe.any():
        raise EvaluationError(
            f"none of the {len(names)} identities has two faces: no genuine pair to measure"
        )
    ranks = (nearest <= genuine_best[:, None]).sum(axis=1)
    roc = _roc(matrix, identity)
    return Metrics(
        faces=len(identity),
        identities=len(names),
        probes=int(is_probe.sum()),
        rank1=float(np.mean(ranks[is_probe] <= 1)),
        rank5=float(np.mean(ranks[is_probe] <= 5)),
        genuine_pairs=roc.genuine_pairs,
        impostor_pairs=roc.impostor_pairs,
        best=roc.best_accuracy(),
        at_threshold=None if threshold is None else roc.at_threshold(threshold),
        tar_at_far=tuple((float(target), roc.at_far(target)) for target in far_targets),
        worst_probes=_worst_probes(matrix, identity, ranks, genuine_best, is_probe, worst),
        roc=roc,
    )


def _checked(distances: np.ndarray, n_labels: int) -> np.ndarray:
    """A float64 copy of ``distances`` after checking it is a usable distance matrix."""
    matrix = np.array(distances, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square distance matrix, got shape {matrix.shape}")
    if matrix.shape[0] != n_labels:
        raise ValueError(f"{matrix.shape[0]} faces but {n_labels} labels")
    off_diagonal = ~np.eye(len(matrix), dtype=bool)
    if not np.isfinite(matrix[off_diagonal]).all():
        raise ValueError("distances must be finite")
    if not np.allclose(matrix, matrix.T, rtol=1e-6, atol=1e-9):
        raise ValueError("distances must be symmetric")
    return matrix


def _nearest_per_identity(matrix: np.ndarray, identity: np.ndarray, count: int) -> np.ndarray:
    """``(N, identities)``: each face's distance to the closest face of every identity."""
    order = np.argsort(identity, kind="stable")
    starts = np.searchsorted(identity[order], np.arange(count))
    return np.minimum.reduceat(matrix[:, order], starts, axis=1)


def _roc(matrix: np.ndarray, identity: np.ndarray) -> Roc:
    """The ROC of every unordered pair (upper triangle), split into genuine and impostor."""
    upper = np.triu(np.ones(matrix.shape, dtype=bool), k=1)
    same = (identity[:, None] == identity[None, :])[upper]
    pairs = matrix[upper]
    return Roc.from_pairs(pairs[same], pairs[~same])


def _worst_probes(
    matrix: np.ndarray,
    identity: np.ndarray,
    ranks: np.ndarray,
    genuine_best: np.ndarray,
    is_probe: np.ndarray,
    worst: int,
) -> tuple[Probe, ...]:
    """The ``worst`` hardest probes; only their rows are searched for the nearest faces."""
    probes = np.flatnonzero(is_probe)
    order = np.lexsort((probes, -genuine_best[probes], -ranks[probes]))
    hardest = []
    for index in probes[order[:worst]]:
        same = identity == identity[index]
        genuine = np.where(same, matrix[index], np.inf)
        impostor = np.where(same, np.inf, matrix[index])
        genuine_index, impostor_index = int(np.argmin(genuine)), int(np.argmin(impostor))
        hardest.append(
            Probe(
                index=int(index),
                rank=int(ranks[index]),
                genuine_index=genuine_index,
                genuine_distance=float(genuine[genuine_index]),
                impostor_index=impostor_index,
                impostor_distance=float(impostor[impostor_index]),
            )
        )
    return tuple(hardest)
