"""One evaluation run: every contender scored on the same faces, side by side.

Detection and alignment run once per alignment variant, aligning each image's largest face into
every chip layout the contenders need, and are shared by all of them: the accuracy comparison
is then about descriptors alone, and the embedding throughput is timed apart from detection
(end-to-end images/s adds the two). Results are deterministic: files are read in the dataset's
sorted order, the detector and aligner are deterministic, and the metrics break ties by index.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from facerank.errors import InvalidImageError
from facerank.evaluation.baselines import Scorer
from facerank.evaluation.dataset import Dataset, Skipped
from facerank.evaluation.errors import EvaluationError
from facerank.evaluation.metrics import Metrics, evaluate_distances
from facerank.faces import AlignMode, ChipSpec, FaceDetector, LandmarkLocator, align_face
from facerank.imaging import read_image_file
from facerank.pipeline import ordered_map

T = TypeVar("T")

WARMUP_CHIPS = 8
"""Chips each contender embeds untimed first: a SavedModel traces its graph on the first call,
which would otherwise be charged to its throughput."""


class Progress(Protocol):
    """Wraps an iterable to show progress (``facerank eval`` passes a tqdm bar on stderr)."""

    def __call__(self, items: Iterable[T], *, total: int, unit: str) -> Iterable[T]: ...


def no_progress(items: Iterable[T], *, total: int, unit: str) -> Iterable[T]:
    """The default for library callers such as training: no output at all."""
    return items


@dataclass(frozen=True)
class DetectionPass:
    """What one detection + alignment pass found: the largest face of each image, as chips."""

    align: AlignMode
    images: int
    """Images that decoded (the detection rate's denominator)."""
    sources: tuple[int, ...]
    """Index into ``Dataset.images`` of each face, i.e. of each image with a face."""
    chips: dict[ChipSpec, np.ndarray]
    """``(faces, size, size, 3)`` chips for each layout in the run, rows in ``sources`` order."""
    methods: dict[str, int]
    """How many faces each alignment method placed (``landmarks``, ``eyes``, ``box``): a mode
    falls back face by face when its own evidence is missing or implausible."""
    unreadable: tuple[Skipped, ...]
    seconds: float

    @property
    def detection_rate(self) -> float:
        return len(self.sources) / self.images if self.images else 0.0


@dataclass(frozen=True)
class ScorerResult:
    """One contender on one alignment variant."""

    name: str
    model_version: str
    align: AlignMode
    unit_distances: bool
    metrics: Metrics
    feature_seconds: float
    """Wall time of computing every face's features (after the untimed warm-up)."""
    detect_seconds: float
    """Wall time of the shared decode + detect + align pass of this variant."""
    images: int

    @property
    def faces_per_s(self) -> float:
        return self.metrics.faces / self.feature_seconds if self.feature_seconds > 0 else 0.0

    @property
    def images_per_s(self) -> float:
        """End to end: decode, detect, align and embed, over every decodable image."""
        return self.images / (self.detect_seconds + self.feature_seconds)


@dataclass(frozen=True)
class EvaluationRun:
    dataset: Dataset
    created: datetime
    threshold: float | None
    """The match threshold given for every model; None: each model's own."""
    passes: tuple[DetectionPass, ...]
    results: tuple[ScorerResult, ...]
    notes: tuple[str, ...]
    """Things the reader should know, e.g. a default contender that could not be loaded."""
    seconds: float


def evaluate(
    dataset: Dataset,
    scorers: Sequence[Scorer],
    aligns: Sequence[AlignMode],
    *,
    detector: FaceDetector,
    locator: LandmarkLocator | None = None,
    threshold: float | None,
    limits: dict[str, int] | None = None,
    notes: Sequence[str] = (),
    progress: Progress = no_progress,
) -> EvaluationRun:
    """Score every scorer on every alignment variant of ``dataset``'s largest faces.

    ``limits`` are the decoder's byte and pixel limits; ``threshold`` is the match threshold
    for every model (None: each model's own), applied where distances are unit-vector ones.
    """
    if not scorers or not aligns:
        raise EvaluationError("nothing to evaluate: give at least one embedder and alignment")
    started = time.perf_counter()
    created = datetime.now(UTC)
    specs = list(dict.fromkeys(scorer.chip for scorer in scorers))
    passes: list[DetectionPass] = []
    results: list[ScorerResult] = []
    for align in aligns:
        detection = detect_and_align(
            dataset, detector, align, specs, limits or {}, progress, locator
        )
        passes.append(detection)
        labels = [dataset.images[i].identity for i in detection.sources]
        for scorer in progress(scorers, total=len(scorers), unit="embedder"):
            results.append(score(scorer, detection, labels, threshold))
    return EvaluationRun(
        dataset=dataset,
        created=created,
        threshold=threshold,
        passes=tuple(passes),
        results=tuple(results),
        notes=tuple(notes),
        seconds=time.perf_counter() - started,
    )


def detect_and_align(
    dataset: Dataset,
    detector: FaceDetector,
    align: AlignMode,
    specs: Sequence[ChipSpec],
    limits: dict[str, int],
    progress: Progress = no_progress,
    locator: LandmarkLocator | None = None,
) -> DetectionPass:
    """Decode, detect and align every image in parallel threads (results in dataset order).

    ``locator`` is required for ``landmarks`` alignment.
    """
    if align == "landmarks" and locator is None:
        raise EvaluationError("landmark alignment needs the landmark model: facerank models fetch")

    def analyze(path: Path) -> tuple[list[np.ndarray], str] | InvalidImageError | None:
        """The largest face's chip in every layout and the alignment method used; ``None``
        without a face."""
        try:
            pixels = read_image_file(path, **limits).pixels
        except InvalidImageError as exc:
            return exc
        detections = detector.detect(pixels)
        if not detections:
            return None
        points = None
        if align == "landmarks" and locator is not None:
            [points] = locator.locate(pixels, [detections[0].landmark_region()])
        aligned = [align_face(pixels, detections[0], spec, align, points) for spec in specs]
        return [face.chip for face in aligned], aligned[0].method

    started = time.perf_counter()
    paths = [image.path for image in dataset.images]
    outcomes = ordered_map(analyze, paths, workers=os.cpu_count() or 1)
    sources: list[int] = []
    chips: list[list[np.ndarray]] = [[] for _ in specs]
    unreadable: list[Skipped] = []
    methods: Counter[str] = Counter()
    for index, outcome in enumerate(progress(outcomes, total=len(paths), unit="img")):
        if isinstance(outcome, InvalidImageError):
            unreadable.append(Skipped(paths[index], outcome.code, str(outcome)))
        elif outcome is not None:
            face_chips, method = outcome
            sources.append(index)
            methods[method] += 1
            for per_spec, chip in zip(chips, face_chips, strict=True):
                per_spec.append(chip)
    images = len(paths) - len(unreadable)
    if not sources:
        raise EvaluationError(
            f"no face found in any of the {images} readable images of {dataset.root}"
            + (f" ({len(unreadable)} files could not be read as images)" if unreadable else "")
        )
    return DetectionPass(
        align=align,
        images=images,
        sources=tuple(sources),
        chips={spec: np.stack(rows) for spec, rows in zip(specs, chips, strict=True)},
        methods=dict(methods),
        unreadable=tuple(unreadable),
        seconds=time.perf_counter() - started,
    )


def score(
    scorer: Scorer, detection: DetectionPass, labels: Sequence[str], threshold: float | None
) -> ScorerResult:
    """Features (timed, after a warm-up), distances and metrics of one scorer on one variant."""
    chips = detection.chips[scorer.chip]
    scorer.features(chips[:WARMUP_CHIPS])
    started = time.perf_counter()
    features = scorer.features(chips)
    feature_seconds = time.perf_counter() - started
    metrics = evaluate_distances(
        scorer.distances(features),
        labels,
        threshold=(threshold or scorer.match_threshold) if scorer.unit_distances else None,
    )
    return ScorerResult(
        name=scorer.name,
        model_version=scorer.model_version,
        align=detection.align,
        unit_distances=scorer.unit_distances,
        metrics=metrics,
        feature_seconds=feature_seconds,
        detect_seconds=detection.seconds,
        images=detection.images,
    )
