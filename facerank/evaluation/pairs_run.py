"""One pairs-protocol run (``facerank eval --pairs``): every contender on the same pairs.

The images the pairs name are read once per detector and alignment variant, through the same
decode + detect + align pass as the leave-one-out mode (the primary face of each image, as the
product enrolls by default, unless ``face`` asks for the largest or the one nearest the
centre), and embedded once per embedder; only
the pairs' distances are computed. Which threshold each contender is scored at follows LFW's
protocol: fitted on ``--pairs-train`` when given, fitted on the other folds of a fold file,
and otherwise the model's own calibrated threshold (or ``--threshold``), never fitted on the
test pairs themselves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from facerank.evaluation.baselines import Scorer
from facerank.evaluation.dataset import Dataset, LabelledImage
from facerank.evaluation.pairs import ImageRef, Pair, PairsFile
from facerank.evaluation.run import (
    DetectionPass,
    FacePick,
    Progress,
    detection_passes,
    no_progress,
    timed_features,
)
from facerank.evaluation.verification import Verification, fit_threshold, verify
from facerank.faces import AlignMode, FaceDetector, LandmarkLocator


@dataclass(frozen=True)
class PairsResult:
    """One contender on one detector and alignment variant."""

    name: str
    model_version: str
    detector: str
    align: AlignMode
    unit_distances: bool
    verification: Verification
    feature_seconds: float
    """Wall time of embedding every face found (after an untimed warm-up)."""


@dataclass(frozen=True)
class PairsRun:
    test: PairsFile
    train: PairsFile | None
    dataset: Dataset
    """Every image the pairs name (test and training), sorted; ``root`` is the images folder."""
    test_images: tuple[int, ...]
    """Indices into ``dataset.images`` of the images the test pairs name."""
    created: datetime
    threshold: float | None
    """The threshold given for every model (``--threshold``); None: each model's own."""
    face: FacePick
    """Which face of an image with several was compared."""
    passes: tuple[DetectionPass, ...]
    results: tuple[PairsResult, ...]
    notes: tuple[str, ...]
    seconds: float

    def missed(self, detection: DetectionPass) -> list[int]:
        """The test images (dataset indices) in which ``detection`` found no face, unreadable
        ones included: every pair naming one of them counts as wrong."""
        found = set(detection.sources)
        return [index for index in self.test_images if index not in found]

    def pass_of(self, result: PairsResult) -> DetectionPass:
        [detection] = [
            p for p in self.passes if (p.detector, p.align) == (result.detector, result.align)
        ]
        return detection


def evaluate_pairs(
    images_dir: Path,
    test: PairsFile,
    train: PairsFile | None,
    scorers: Sequence[Scorer],
    aligns: Sequence[AlignMode],
    *,
    detectors: Mapping[str, FaceDetector],
    locator: LandmarkLocator | None = None,
    threshold: float | None,
    limits: dict[str, int] | None = None,
    notes: Sequence[str] = (),
    progress: Progress = no_progress,
    face: FacePick = "primary",
) -> PairsRun:
    """Score every scorer on every detector and alignment variant of the pairs' images.

    ``train`` (a single set or folds, all used) is what thresholds are fitted on; it must be
    None for a fold file, which is scored by cross-validation. ``threshold`` applies only when
    nothing is fitted.
    """
    if train is not None and test.cross_validation:
        raise ValueError("a fold file is cross-validated: it takes no training pairs")
    started = time.perf_counter()
    created = datetime.now(UTC)
    refs = sorted({*test.images, *(train.images if train else ())})
    index = {ref: i for i, ref in enumerate(refs)}
    dataset = Dataset(
        root=images_dir,
        images=tuple(LabelledImage(images_dir / ref.relative, ref.name) for ref in refs),
        skipped=(),
    )
    passes: list[DetectionPass] = []
    results: list[PairsResult] = []
    variants = detection_passes(
        dataset, scorers, aligns, detectors, locator, limits, progress, face
    )
    for detection in variants:
        passes.append(detection)
        for scorer in progress(scorers, total=len(scorers), unit="embedder"):
            results.append(_score(scorer, detection, index, test, train, threshold))
    return PairsRun(
        test=test,
        train=train,
        dataset=dataset,
        test_images=tuple(index[ref] for ref in test.images),
        created=created,
        threshold=threshold,
        face=face,
        passes=tuple(passes),
        results=tuple(results),
        notes=tuple(notes),
        seconds=time.perf_counter() - started,
    )


def _score(
    scorer: Scorer,
    detection: DetectionPass,
    index: Mapping[ImageRef, int],
    test: PairsFile,
    train: PairsFile | None,
    threshold: float | None,
) -> PairsResult:
    features, feature_seconds = timed_features(scorer, detection.chips[scorer.chip])
    row = np.full(len(index), -1)
    row[list(detection.sources)] = np.arange(len(detection.sources))

    def distances(pairs: Sequence[Pair]) -> np.ndarray:
        """One distance per pair; NaN where either image has no face."""
        left = row[[index[p.left] for p in pairs]]
        right = row[[index[p.right] for p in pairs]]
        found = (left >= 0) & (right >= 0)
        result = np.full(len(pairs), np.nan)
        result[found] = scorer.pair_distances(features, left[found], right[found])
        return result

    pairs = test.pairs
    same = np.array([p.same for p in pairs], dtype=bool)
    fold = np.repeat(np.arange(len(test.folds)), [len(f) for f in test.folds])
    if train is not None:
        train_same = np.array([p.same for p in train.pairs], dtype=bool)
        fitted: float | None = fit_threshold(distances(train.pairs), train_same)
        source = f"fitted on {train.path.name}"
    else:
        fitted, source = _unfitted_threshold(scorer, test, threshold)
    return PairsResult(
        name=scorer.name,
        model_version=scorer.model_version,
        detector=detection.detector,
        align=detection.align,
        unit_distances=scorer.unit_distances,
        verification=verify(distances(pairs), same, fold, threshold=fitted, source=source),
        feature_seconds=feature_seconds,
    )


def _unfitted_threshold(
    scorer: Scorer, test: PairsFile, threshold: float | None
) -> tuple[float | None, str]:
    """The threshold to score ``test`` at without training pairs, and where it comes from
    (None: fitted fold by fold, or none applies)."""
    if test.cross_validation:
        return None, f"fitted on the other {len(test.folds) - 1} folds, fold by fold"
    if scorer.unit_distances and threshold is not None:
        return threshold, "given (--threshold or FACERANK_MATCH_THRESHOLD)"
    if scorer.unit_distances and scorer.match_threshold is not None:
        return scorer.match_threshold, "the model's own calibrated match threshold"
    return None, f"none: {scorer.name} has no calibrated threshold (give --pairs-train)"
