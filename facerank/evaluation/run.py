"""One evaluation run: every contender scored on the same faces, side by side.

Detection and alignment run once per detector and alignment variant, aligning each image's
primary face into every chip layout the contenders need, and are shared by all of them: the
accuracy comparison within a variant is then about descriptors alone, and the embedding
throughput is timed apart from detection (end-to-end images/s adds the two). Results are
deterministic: files are read in the dataset's sorted order, the detector and aligner are
deterministic, and the metrics break ties by index.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import numpy as np

from facerank.errors import InvalidImageError
from facerank.evaluation.baselines import Scorer
from facerank.evaluation.dataset import Dataset, Skipped
from facerank.evaluation.errors import EvaluationError
from facerank.evaluation.metrics import Metrics, evaluate_distances
from facerank.faces import (
    AlignMode,
    ChipSpec,
    FaceDetector,
    LandmarkLocator,
    align_face,
)
from facerank.faces.find import FoundFace, find_faces
from facerank.faces.primary import choose_faces
from facerank.imaging import read_image_file
from facerank.pipeline import ordered_map

T = TypeVar("T")

FacePick = Literal["primary", "largest", "centre"]
"""Which face of an image with several is evaluated: the primary or the largest one, as the
product enrolls a photo with ``FACERANK_ENROLL_FACES`` (:mod:`facerank.faces.primary`), or the
one nearest the image's centre (LFW's images are centred on their subject)."""

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
    """What one detection + alignment pass found: the primary face of each image, as chips."""

    detector: str
    """The detector's name (``FACERANK_DETECTOR``'s values)."""
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
    detector: str
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
    detectors: Mapping[str, FaceDetector],
    locator: LandmarkLocator | None = None,
    threshold: float | None,
    limits: dict[str, int] | None = None,
    notes: Sequence[str] = (),
    progress: Progress = no_progress,
) -> EvaluationRun:
    """Score every scorer on every detector and alignment variant of ``dataset``'s primary faces.

    ``detectors`` maps each detector's name to the detector; ``limits`` are the decoder's byte
    and pixel limits; ``threshold`` is the match threshold for every model (None: each model's
    own), applied where distances are unit-vector ones.
    """
    started = time.perf_counter()
    created = datetime.now(UTC)
    passes: list[DetectionPass] = []
    results: list[ScorerResult] = []
    variants = detection_passes(dataset, scorers, aligns, detectors, locator, limits, progress)
    for detection in variants:
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


def detection_passes(
    dataset: Dataset,
    scorers: Sequence[Scorer],
    aligns: Sequence[AlignMode],
    detectors: Mapping[str, FaceDetector],
    locator: LandmarkLocator | None,
    limits: dict[str, int] | None,
    progress: Progress,
    face: FacePick = "primary",
) -> Iterator[DetectionPass]:
    """One :func:`detect_and_align` pass per detector and alignment, in that order, each with
    the chips of every layout ``scorers`` need; one at a time, so only one pass's chips are
    held while its scorers run."""
    if not scorers or not aligns or not detectors:
        raise EvaluationError(
            "nothing to evaluate: give at least one embedder, alignment and detector"
        )
    specs = list(dict.fromkeys(scorer.chip for scorer in scorers))
    for name, detector in detectors.items():
        for align in aligns:
            yield detect_and_align(
                dataset, (name, detector), align, specs, limits or {}, progress, locator, face
            )


def pick_face(found: Sequence[FoundFace], shape: tuple[int, ...], face: FacePick) -> FoundFace:
    """The face to evaluate of an image's ``found`` faces (largest first): the one the product
    enrolls (``primary``, ``largest``), or the one whose box centre is nearest the image's
    centre (the larger one on a tie)."""
    height, width = shape[:2]
    if face != "centre":
        [chosen] = choose_faces(found, face, width, height)
        return chosen

    def off_centre(candidate: FoundFace) -> float:
        x, y, w, h = candidate.detection.box
        return math.hypot(x + w / 2 - width / 2, y + h / 2 - height / 2)

    return min(found, key=off_centre)


def detect_and_align(
    dataset: Dataset,
    detector: tuple[str, FaceDetector],
    align: AlignMode,
    specs: Sequence[ChipSpec],
    limits: dict[str, int],
    progress: Progress = no_progress,
    locator: LandmarkLocator | None = None,
    face: FacePick = "primary",
) -> DetectionPass:
    """Decode, detect and align every image in parallel threads (results in dataset order).

    ``detector`` is ``(name, detector)``; ``locator`` is required for ``landmarks`` alignment;
    ``face`` says which face of an image with several is evaluated.
    """
    detector_name, face_detector = detector
    if align == "landmarks" and locator is None:
        raise EvaluationError("landmark alignment needs the landmark model: facerank models fetch")

    def analyze(path: Path) -> tuple[list[np.ndarray], str] | InvalidImageError | None:
        """The chosen face's chip in every layout and the alignment method used; ``None``
        without a face."""
        try:
            pixels = read_image_file(path, **limits).pixels
        except InvalidImageError as exc:
            return exc
        found = find_faces(pixels, face_detector, locator if align == "landmarks" else None)
        if not found:
            return None
        chosen = pick_face(found, pixels.shape, face)
        aligned = [
            align_face(pixels, chosen.detection, spec, align, chosen.landmarks) for spec in specs
        ]
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
        detector=detector_name,
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
    features, feature_seconds = timed_features(scorer, detection.chips[scorer.chip])
    metrics = evaluate_distances(
        scorer.distances(features),
        labels,
        threshold=(threshold or scorer.match_threshold) if scorer.unit_distances else None,
    )
    return ScorerResult(
        name=scorer.name,
        model_version=scorer.model_version,
        detector=detection.detector,
        align=detection.align,
        unit_distances=scorer.unit_distances,
        metrics=metrics,
        feature_seconds=feature_seconds,
        detect_seconds=detection.seconds,
        images=detection.images,
    )


def timed_features(scorer: Scorer, chips: np.ndarray) -> tuple[np.ndarray, float]:
    """``scorer``'s features of ``chips`` and their wall time, after an untimed warm-up."""
    scorer.features(chips[:WARMUP_CHIPS])
    started = time.perf_counter()
    features = scorer.features(chips)
    return features, time.perf_counter() - started
