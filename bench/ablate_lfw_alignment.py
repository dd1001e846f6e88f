"""LFW pairs: what each choice of face and of landmark chip is worth, faces found once for all.

    .venv/bin/python bench/ablate_lfw_alignment.py --images DIR --pairs-train TRAIN.txt \\
        --pairs-test TEST.txt

Needs the default pipeline's models (the SSD detector, the landmark net, dlib-r34-v1: converted
into the facerank cache on first run) and LFW-style pairs files and images (``facerank eval
--pairs`` documents the layout). Every image's faces and their landmarks are found once
(:func:`facerank.faces.find.find_faces`, as the pipeline finds them, the rescue of unsure faces
and HOG's second opinion included); then each variant picks a face and builds its 150 px chip
its own way, is embedded with the descriptor and scored by LFW's protocol (threshold fitted on
the training pairs, test accuracy with a pair whose face was missed counted wrong):

* ``dlib68``: the product, dlib's chip rule for a 68-point shape (33 landmarks), on the primary
  face (:mod:`facerank.faces.primary`);
* ``dlib68-largest``: the same on the largest face, as the product enrolled before;
* ``dlib5``: dlib's rule for a 5-point shape, on the same landmarks;
* ``*-verified``: landmarks failing :func:`~facerank.faces.landmarks.plausible` (bounds measured
  on Haar boxes) align on the box's fixed eye positions instead, as SSD faces did before;
* ``dlib68-no-second-opinion``: ``dlib68`` with the faces only HOG found counted as missed;
* ``dlib68-no-rescue``: ``dlib68`` with the rescued faces and HOG's counted as missed.

Prints a table and writes ``bench/results/lfw-alignment-ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerank.descriptor.landmarks import ensure_landmark_model
from facerank.descriptor.pretrained import ensure_pretrained
from facerank.descriptor.ssd import ensure_ssd_model
from facerank.embedding import Embedder, load_embedder
from facerank.evaluation.pairs import ImageRef, PairsFile, read_pairs
from facerank.evaluation.verification import fit_threshold, score_at
from facerank.faces import DLIB_CHIP_150, LandmarkLocator, align_face
from facerank.faces.align import similarity_transform, warp_chip
from facerank.faces.find import FoundFace, find_faces
from facerank.faces.landmarks import (
    DLIB_FIVE_FROM_68,
    DLIB_FIVE_TEMPLATE,
    fitted_chip_transform,
    landmark_chip,
    plausible,
)
from facerank.faces.primary import choose_faces
from facerank.imaging import read_image_file
from facerank.pipeline import detector_from_settings, ordered_map
from facerank.settings import EnrollFaces, Settings

RESULTS = Path(__file__).resolve().parent / "results" / "lfw-alignment-ablation.json"

ChipRule = Callable[[np.ndarray, FoundFace], np.ndarray]


@dataclass(frozen=True)
class Face:
    pixels: np.ndarray
    primary: FoundFace
    largest: FoundFace
    rescued: bool
    """Found below the SSD's threshold (an unsure face the landmarks verified)."""
    second_opinion: bool
    """Found by HOG, the SSD having found nothing."""

    def chosen(self, policy: EnrollFaces) -> FoundFace:
        return self.largest if policy == "largest" else self.primary


@dataclass(frozen=True)
class Variant:
    rule: ChipRule
    face: EnrollFaces = "primary"
    rescue: bool = True
    second_opinion: bool = True

    def keeps(self, face: Face) -> bool:
        return (self.rescue or not face.rescued) and (
            self.second_opinion or not face.second_opinion
        )


def dlib68(pixels: np.ndarray, face: FoundFace) -> np.ndarray:
    return align_face(pixels, face.detection, DLIB_CHIP_150, "landmarks", face.landmarks).chip


def dlib5(pixels: np.ndarray, face: FoundFace) -> np.ndarray:
    assert face.landmarks is not None
    five = face.landmarks[list(DLIB_FIVE_FROM_68)]
    matrix = fitted_chip_transform(DLIB_FIVE_TEMPLATE, five)
    return warp_chip(pixels, face.detection, matrix, DLIB_CHIP_150)


def verified(rule: ChipRule) -> ChipRule:
    """``rule``, unless the landmarks fail the plausibility bounds: then the box's eyes."""

    def chip(pixels: np.ndarray, face: FoundFace) -> np.ndarray:
        assert face.landmarks is not None
        if plausible(landmark_chip(face.landmarks), face.detection.box):
            return rule(pixels, face)
        eyes = (DLIB_CHIP_150.left_eye, DLIB_CHIP_150.right_eye)
        matrix = similarity_transform(face.detection.box_eyes(), eyes)
        return warp_chip(pixels, face.detection, matrix, DLIB_CHIP_150)

    return chip


VARIANTS: dict[str, Variant] = {
    "dlib68": Variant(dlib68),
    "dlib68-largest": Variant(dlib68, face="largest"),
    "dlib5": Variant(dlib5),
    "dlib68-verified": Variant(verified(dlib68)),
    "dlib5-verified": Variant(verified(dlib5)),
    "dlib68-no-second-opinion": Variant(dlib68, second_opinion=False),
    "dlib68-no-rescue": Variant(dlib68, rescue=False, second_opinion=False),
}


def find_all(images: Path, refs: list[ImageRef], settings: Settings) -> dict[ImageRef, Face]:
    detector = detector_from_settings(settings)
    locator = LandmarkLocator(ensure_landmark_model(settings))
    threshold = getattr(detector, "min_confidence", 0.0)

    def find(ref: ImageRef) -> Face | None:
        pixels = read_image_file(images / ref.relative).pixels
        found = [f for f in find_faces(pixels, detector, locator) if f.landmarks is not None]
        if not found:
            return None
        height, width = pixels.shape[:2]
        [primary] = choose_faces(found, "primary", width, height)
        by = found[0].detection
        rescued = by.detector == "ssd" and by.confidence < threshold
        return Face(pixels, primary, found[0], rescued, by.detector == "hog")

    faces = {}
    for done, (ref, face) in enumerate(
        zip(refs, ordered_map(find, refs, workers=os.cpu_count() or 1), strict=True)
    ):
        if face is not None:
            faces[ref] = face
        if (done + 1) % 500 == 0:
            print(f"found faces in {done + 1} of {len(refs)} images", flush=True)
    return faces


def score(
    faces: dict[ImageRef, Face],
    embedder: Embedder,
    variant: Variant,
    train: PairsFile,
    test: PairsFile,
) -> dict[str, Any]:
    kept = {ref: face for ref, face in faces.items() if variant.keeps(face)}
    refs = list(kept)
    chips = [variant.rule(kept[r].pixels, kept[r].chosen(variant.face)) for r in refs]
    vectors = embedder.embed(np.stack(chips))
    row = {ref: i for i, ref in enumerate(refs)}

    def distances(pairs: PairsFile) -> tuple[np.ndarray, np.ndarray]:
        found = [(p.left in row and p.right in row) for p in pairs.pairs]
        d = np.array(
            [
                float(np.linalg.norm(vectors[row[p.left]] - vectors[row[p.right]]))
                if ok
                else np.nan
                for p, ok in zip(pairs.pairs, found, strict=True)
            ]
        )
        return d, np.array([p.same for p in pairs.pairs])

    scored = score_at(*distances(test), fit_threshold(*distances(train)))
    return {
        "accuracy": scored.accuracy,
        "accuracy_found": scored.found_accuracy,
        "threshold": scored.threshold,
        "test_pairs_missed": scored.pairs - scored.found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--pairs-train", type=Path, required=True)
    parser.add_argument("--pairs-test", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    settings = Settings.from_env()
    ensure_ssd_model(settings)
    embedder = load_embedder(str(ensure_pretrained(settings)))
    train, test = read_pairs(args.pairs_train), read_pairs(args.pairs_test)
    refs = sorted({*train.images, *test.images})
    faces = find_all(args.images, refs, settings)
    variants = {
        name: score(faces, embedder, variant, train, test) for name, variant in VARIANTS.items()
    }
    results = {
        "images": len(refs),
        "faces": len(faces),
        "rescued": sum(face.rescued for face in faces.values()),
        "second_opinion": sum(face.second_opinion for face in faces.values()),
        "primary_not_largest": sum(face.primary is not face.largest for face in faces.values()),
        "model_version": embedder.model_version,
        "train": str(args.pairs_train),
        "test": str(args.pairs_test),
        "variants": variants,
        "seconds": time.perf_counter() - started,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    print(f"{'variant':<26} {'accuracy':>9} {'found only':>11} {'threshold':>10}")
    for name, v in variants.items():
        print(
            f"{name:<26} {v['accuracy']:>9.2%} {v['accuracy_found']:>11.2%} {v['threshold']:>10.4f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
