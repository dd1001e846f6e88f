"""A run's dataset: aligned face chips with identity labels, exported once into ``data/``.

Why export instead of reading the gallery from every worker: the workers of a run must train
on exactly the same faces, however the gallery changes meanwhile, and re-aligning crops in N
processes at every restart would waste the CPU the training needs. So the run's data is frozen
at the start as one uint8 array (``chips.npy``, N x S x S x 3 RGB, in the backbone's chip
layout) and ``labels.json`` (identity names, one label per chip, where each chip came from).

Faces come from the gallery (stored crops re-chipped, no detection needed) or from a folder of
identity folders (decoded, detected and aligned by the same :class:`FacePipeline` the rest of
facerank uses). :func:`split_by_identity` then holds out whole identities, so the candidate is
compared with the active model on people it never saw.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerank.errors import FacerankError
from facerank.evaluation.dataset import load_dataset
from facerank.faces.align import GALLERY_CROP_256, ChipSpec, rechip
from facerank.files import atomic_writer
from facerank.gallery import Gallery
from facerank.pipeline import FacePipeline, ordered_map
from facerank.progress import progress as progress_bar
from training.errors import TrainingDataError
from training.rundir import SHARED_MODE, RunDir, write_json

FORMAT = "facerank.training.dataset/v1"
CHIPS_NAME = "chips.npy"
LABELS_NAME = "labels.json"


@dataclass(frozen=True)
class FaceDataset:
    """Chips and who they show; ``labels[i]`` indexes ``identities``."""

    chips: np.ndarray
    """``(N, size, size, 3)`` uint8 RGB, laid out as ``chip``."""
    labels: np.ndarray
    """``(N,)`` int64 identity index per chip."""
    identities: tuple[str, ...]
    chip: ChipSpec
    sources: tuple[str, ...]
    """Where each chip came from (a gallery face id, or a file path)."""


@dataclass(frozen=True)
class Skip:
    """A source that gave no chip, and why (an error code and a message)."""

    source: str
    code: str
    message: str


@dataclass(frozen=True)
class Split:
    """Identity indices trained on, and those held out for evaluation (never trained on)."""

    train: np.ndarray
    heldout: np.ndarray

    def faces(self, labels: np.ndarray, identities: np.ndarray) -> np.ndarray:
        """Indices of the faces whose label is one of ``identities``."""
        return np.flatnonzero(np.isin(labels, identities))


@dataclass(frozen=True)
class _Chip:
    identity: str
    source: str
    pixels: np.ndarray


def export_gallery_dataset(
    gallery: Gallery, run: RunDir, chip: ChipSpec, *, progress: bool | None = None
) -> list[Skip]:
    """Every enrolled face's stored crop, re-chipped to ``chip``, into ``run``'s ``data/``.

    Returns the faces that could not be read (their crop vanished since the record listed it).
    ``progress``: a bar on stderr (None: only on a terminal).
    """
    faces = [(r.identity, f.face_id) for r in gallery.records() for f in r.faces]

    def load(item: tuple[str, str]) -> _Chip | Skip:
        identity, face = item
        try:
            crop = gallery.crop(face)
        except FacerankError as exc:
            return Skip(face, exc.code, str(exc))
        return _Chip(identity, face, rechip(crop, GALLERY_CROP_256, chip))

    results = ordered_map(load, faces, workers=os.cpu_count() or 1)
    return _write(run, chip, progress_bar(results, total=len(faces), unit="face", enabled=progress))


def export_folder_dataset(
    dataset_dir: Path,
    pipeline: FacePipeline,
    run: RunDir,
    chip: ChipSpec,
    *,
    progress: bool | None = None,
) -> list[Skip]:
    """The primary face of every image under ``dataset_dir/<identity>/``, aligned into
    ``chip`` by ``pipeline`` (its detector and alignment), into ``run``'s ``data/``.

    Images without a usable face are skipped; the skips are returned with their reasons.
    """
    images = load_dataset(dataset_dir).images

    def load(path: Path, identity: str) -> _Chip | Skip:
        try:
            pixels = pipeline.decode(path.read_bytes()).pixels
        except OSError as exc:
            return Skip(str(path), "unreadable_file", exc.strerror or str(exc))
        except FacerankError as exc:
            return Skip(str(path), exc.code, str(exc))
        face = pipeline.analyze(pixels).subject()
        if face is None:
            return Skip(str(path), "no_face", "no face found")
        return _Chip(identity, str(path), pipeline.align(pixels, face, chip).chip)

    results = ordered_map(
        lambda image: load(image.path, image.identity), images, workers=os.cpu_count() or 1
    )
    return _write(
        run, chip, progress_bar(results, total=len(images), unit="image", enabled=progress)
    )


def write_dataset(
    run: RunDir, chip: ChipSpec, chips: np.ndarray, identities: Sequence[str]
) -> None:
    """Write labelled chips (one identity name per chip) as ``run``'s dataset directly."""
    items = (
        _Chip(name, f"{name}/{i}", pixels)
        for i, (name, pixels) in enumerate(zip(identities, chips, strict=True))
    )
    _write(run, chip, items)


def _write(run: RunDir, chip: ChipSpec, items: Iterable[_Chip | Skip]) -> list[Skip]:
    """Collect chips, then write ``chips.npy`` and ``labels.json`` atomically (labels last:
    a dataset is complete exactly when its labels file exists)."""
    pixels: list[np.ndarray] = []
    names: list[str] = []
    sources: list[str] = []
    skipped: list[Skip] = []
    for item in items:
        if isinstance(item, Skip):
            skipped.append(item)
            continue
        if item.pixels.shape != (chip.size, chip.size, 3) or item.pixels.dtype != np.uint8:
            raise TrainingDataError(f"{item.source}: not a uint8 {chip.size} px RGB chip")
        pixels.append(item.pixels)
        names.append(item.identity)
        sources.append(item.source)
    if not pixels:
        raise TrainingDataError(f"no face to train on ({len(skipped)} sources skipped)")
    identities = sorted(set(names))
    index = {name: i for i, name in enumerate(identities)}
    run.data_dir.mkdir(parents=True, exist_ok=True)
    labels_path = run.data_dir / LABELS_NAME
    labels_path.unlink(missing_ok=True)
    _save_npy(run.data_dir / CHIPS_NAME, np.stack(pixels))
    write_json(
        labels_path,
        {
            "format": FORMAT,
            "chip": chip.to_json(),
            "identities": identities,
            "labels": [index[name] for name in names],
            "sources": sources,
            "skipped": [vars(s) for s in skipped],
        },
    )
    return skipped


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_writer(path, mode=SHARED_MODE) as handle:
        np.save(handle, array)


def read_dataset(run: RunDir) -> FaceDataset:
    """The dataset a run was prepared with; :class:`TrainingDataError` if it is not there."""
    try:
        meta = json.loads((run.data_dir / LABELS_NAME).read_text(encoding="utf-8"))
        chips = np.load(run.data_dir / CHIPS_NAME)
    except FileNotFoundError:
        raise TrainingDataError(
            f"run {run.run_id} has no complete dataset in {run.data_dir}"
        ) from None
    except ValueError as exc:
        raise TrainingDataError(f"unreadable dataset in {run.data_dir}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrainingDataError(f"{run.data_dir / LABELS_NAME}: expected format {FORMAT!r}")
    chip = ChipSpec.from_json(meta["chip"])
    labels = np.asarray(meta["labels"], dtype=np.int64)
    identities = tuple(str(name) for name in meta["identities"])
    if chips.dtype != np.uint8 or chips.shape[1:] != (chip.size, chip.size, 3):
        raise TrainingDataError(f"chips.npy holds {chips.dtype} {chips.shape}, not {chip.size} px")
    if len(labels) != len(chips) or (
        len(labels) and not 0 <= labels.min() <= labels.max() < len(identities)
    ):
        raise TrainingDataError("labels.json does not match chips.npy")
    return FaceDataset(chips, labels, identities, chip, tuple(meta["sources"]))


def split_by_identity(labels: np.ndarray, holdout_fraction: float, seed: int) -> Split:
    """Hold out ``holdout_fraction`` of the identities (at least two when the fraction is not
    zero), drawn by ``seed`` among those with two or more faces: an identity with one face gives
    no genuine pair to evaluate. The held-out identities are never trained on.
    """
    identities, counts = np.unique(labels, return_counts=True)
    if holdout_fraction <= 0:
        return Split(train=identities, heldout=identities[:0])
    wanted = max(2, round(holdout_fraction * len(identities)))
    eligible = identities[counts >= 2]
    if len(eligible) < wanted or len(identities) - wanted < 2:
        raise TrainingDataError(
            f"cannot hold out {wanted} of {len(identities)} identities ({len(eligible)} have "
            "two faces or more) and still train on two: add identities or lower holdout_fraction"
        )
    rng = np.random.default_rng(seed)
    heldout = np.sort(rng.choice(eligible, size=wanted, replace=False))
    return Split(train=np.setdiff1d(identities, heldout), heldout=heldout)
