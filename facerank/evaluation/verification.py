"""Pair verification under LFW's protocol: fit the threshold on some pairs, score others.

Pure NumPy over one distance per pair, ``NaN`` where either image yielded no face (missed by
the detector, or unreadable). The protocol's rule is that such a pair is a wrong answer, not a
skipped one, because a deployed system cannot answer for a face it did not find: accuracy is
``correct / all pairs``. The accuracy on pairs with both faces found is reported beside it, as
it separates the descriptor from the detector.

Fitting picks the threshold of highest accuracy on the training pairs' found pairs (the missed
ones are wrong at any threshold), at the lowest such distance, placed halfway to the next pair
distance so no training pair sits on the boundary. Cross-validation (LFW View 2) fits on all
folds but one and scores that one, for each fold in turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facerank.evaluation.errors import EvaluationError
from facerank.evaluation.metrics import FAR_TARGETS, OperatingPoint, Roc


@dataclass(frozen=True)
class FoldScore:
    """One scored set of pairs at one threshold (a fold, or the whole test set)."""

    threshold: float
    pairs: int
    found: int
    """Pairs with a face found in both images."""
    correct: int
    """Found pairs decided right: genuine with distance <= threshold, impostor above it."""

    @property
    def accuracy(self) -> float:
        """Correct over all pairs: a pair with a missed face counts as wrong."""
        return self.correct / self.pairs

    @property
    def found_accuracy(self) -> float:
        """Correct over the pairs with both faces found (0 when there are none)."""
        return self.correct / self.found if self.found else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "threshold": self.threshold,
            "pairs": self.pairs,
            "found": self.found,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "found_accuracy": self.found_accuracy,
        }


@dataclass(frozen=True)
class Verification:
    """Accuracy of the test pairs (per fold), and TAR at FAR on their found pairs."""

    folds: tuple[FoldScore, ...]
    """One per fold, each at its own threshold; empty when no threshold applies (a distance
    without a calibrated threshold and nothing to fit it on)."""
    threshold_source: str
    """Where the thresholds came from, in words, for the report."""
    pairs: int
    found: int
    genuine_found: int
    impostor_found: int
    tar_at_far: tuple[tuple[float, OperatingPoint], ...]
    """On the found pairs, all folds pooled; empty unless both kinds of pair were found."""
    roc: Roc | None = field(repr=False, compare=False)

    @property
    def accuracy(self) -> float | None:
        return float(np.mean([f.accuracy for f in self.folds])) if self.folds else None

    @property
    def found_accuracy(self) -> float | None:
        return float(np.mean([f.found_accuracy for f in self.folds])) if self.folds else None

    @property
    def accuracy_std(self) -> float | None:
        """Standard deviation over folds (population, as LFW results are usually quoted);
        None for a single test set."""
        return float(np.std([f.accuracy for f in self.folds])) if len(self.folds) > 1 else None

    @property
    def found_accuracy_std(self) -> float | None:
        if len(self.folds) < 2:
            return None
        return float(np.std([f.found_accuracy for f in self.folds]))

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "found_accuracy": self.found_accuracy,
            "found_accuracy_std": self.found_accuracy_std,
            "threshold_source": self.threshold_source,
            "pairs": self.pairs,
            "found_pairs": self.found,
            "genuine_found": self.genuine_found,
            "impostor_found": self.impostor_found,
            "folds": [fold.to_json() for fold in self.folds],
            "tar_at_far": [
                {"far_target": target, **point.to_json()} for target, point in self.tar_at_far
            ],
        }


def fit_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold of highest accuracy on these pairs (``NaN`` distances: missed, ignored).

    Among equally accurate thresholds the lowest wins; the threshold returned lies halfway
    between the last distance accepted and the next one.
    """
    found = ~np.isnan(distances)
    genuine, impostor = distances[found & same], distances[found & ~same]
    if not len(genuine) or not len(impostor):
        raise EvaluationError(
            f"cannot fit a threshold: {len(genuine)} matched and {len(impostor)} mismatched "
            "training pairs with both faces found (need at least one of each)"
        )
    roc = Roc.from_pairs(genuine, impostor)
    best = roc.best_accuracy()
    k = int(np.searchsorted(roc.thresholds, best.threshold))
    if k + 1 == len(roc.thresholds):
        return best.threshold
    accepted, rejected = roc.thresholds[k], roc.thresholds[k + 1]
    middle = (accepted + rejected) / 2
    return float(middle if middle < rejected else accepted)  # adjacent floats: no middle


def score_at(distances: np.ndarray, same: np.ndarray, threshold: float) -> FoldScore:
    """Decide every pair at ``threshold``; a ``NaN`` (missed) pair is never correct."""
    found = ~np.isnan(distances)
    accepted = np.zeros(len(distances), dtype=bool)
    accepted[found] = distances[found] <= threshold
    return FoldScore(
        threshold=float(threshold),
        pairs=len(distances),
        found=int(found.sum()),
        correct=int((found & (accepted == same)).sum()),
    )


def verify(
    distances: np.ndarray,
    same: np.ndarray,
    fold: np.ndarray,
    *,
    threshold: float | None,
    source: str,
    far_targets: Sequence[float] = FAR_TARGETS,
) -> Verification:
    """Score test pairs: at ``threshold`` when given (one fold), else by cross-validation over
    ``fold`` (each fold at the threshold fitted on all the others).

    ``threshold=None`` with a single fold means no threshold applies: accuracy is left out.
    """
    distances = np.asarray(distances, dtype=np.float64)
    same, fold = np.asarray(same, dtype=bool), np.asarray(fold)
    if not len(distances):
        raise EvaluationError("no test pairs to score")
    folds = np.unique(fold)
    if threshold is not None:
        scores = [score_at(distances, same, threshold)]
    elif len(folds) > 1:
        scores = [
            score_at(
                distances[fold == k],
                same[fold == k],
                fit_threshold(distances[fold != k], same[fold != k]),
            )
            for k in folds
        ]
    else:
        scores = []
    found = ~np.isnan(distances)
    genuine, impostor = distances[found & same], distances[found & ~same]
    roc = Roc.from_pairs(genuine, impostor) if len(genuine) and len(impostor) else None
    return Verification(
        folds=tuple(scores),
        threshold_source=source,
        pairs=len(distances),
        found=int(found.sum()),
        genuine_found=len(genuine),
        impostor_found=len(impostor),
        tar_at_far=()
        if roc is None
        else tuple((float(target), roc.at_far(target)) for target in far_targets),
        roc=roc,
    )
