"""Alignment benchmark: the pretrained descriptor's accuracy with box, eye and landmark chips.

    .venv/bin/python bench/bench_alignment.py --dataset att_faces [--roll DEG] [--repeat N]

Needs the pretrained descriptor and the landmark model (both converted into the facerank cache
on first run: npm and the registry once) and a dataset of ``<identity>/<image>`` folders.
Prints a table and writes ``bench/results/alignment.json``. Comparisons, in one run:

* accuracy: the largest Haar face of every image, aligned ``box``, ``eyes`` and ``landmarks``
  into the descriptor's 150 px chip, embedded, scored leave-one-out (rank-1, rank-5) and as
  verification pairs (best accuracy, TAR at FAR 1% and 0.1%, and d', the separation of
  genuine and impostor distances, which still moves when rank-1 is saturated); ``--roll``
  first rotates every image by a random angle within +-DEG (seeded), as tilted heads in
  real photos are, and writes ``alignment-roll<DEG>.json`` instead;
* cost: locating the landmarks of one face (crop, 112 px net input, the SavedModel, mapping
  back: what the pipeline adds per face) against detecting that image's faces with Haar and
  against embedding one chip with the descriptor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sidebyside import time_pair

from facerank.descriptor.landmarks import ensure_landmark_model
from facerank.descriptor.pretrained import ensure_pretrained
from facerank.embedding import Embedder, load_embedder
from facerank.evaluation.dataset import Dataset, load_dataset
from facerank.evaluation.metrics import evaluate_embeddings, pairwise_distances
from facerank.faces import AlignMode, Detection, HaarFaceDetector, align_face
from facerank.faces.landmarks import LandmarkLocator
from facerank.imaging import read_image_file
from facerank.pipeline import detector_from_settings
from facerank.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "alignment.json"
MODES: tuple[AlignMode, ...] = ("box", "eyes", "landmarks")


@dataclass(frozen=True)
class Face:
    identity: str
    pixels: np.ndarray
    detection: Detection
    landmarks: np.ndarray | None


def load_faces(
    dataset: Dataset, detector: HaarFaceDetector, locator: LandmarkLocator, roll: float
) -> list[Face]:
    """The largest face of every image Haar finds one in, with its landmarks."""
    rng = np.random.default_rng(0)
    faces = []
    for image in dataset.images:
        pixels = rolled(read_image_file(image.path).pixels, rng.uniform(-roll, roll))
        found = detector.detect(pixels)
        if found:
            [points] = locator.locate(pixels, [found[0].landmark_region()])
            faces.append(Face(image.identity, pixels, found[0], points))
    return faces


def rolled(pixels: np.ndarray, degrees: float) -> np.ndarray:
    if degrees == 0:
        return pixels
    height, width = pixels.shape[:2]
    rotation = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(pixels, rotation, (width, height), borderMode=cv2.BORDER_REFLECT)


def d_prime(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Separation of genuine and impostor distances in pooled standard deviations."""
    distances = pairwise_distances(vectors)
    upper = np.triu_indices(len(vectors), 1)
    same = (labels[:, None] == labels[None, :])[upper]
    genuine, impostor = distances[upper][same], distances[upper][~same]
    pooled = np.sqrt((genuine.var() + impostor.var()) / 2)
    return float((impostor.mean() - genuine.mean()) / pooled)


def score(faces: list[Face], embedder: Embedder, mode: AlignMode) -> dict[str, Any]:
    aligned = [align_face(f.pixels, f.detection, embedder.chip, mode, f.landmarks) for f in faces]
    labels = np.array([f.identity for f in faces])
    vectors = embedder.embed(np.stack([a.chip for a in aligned]))
    metrics = evaluate_embeddings(vectors, labels)
    methods = [a.method for a in aligned]
    return {
        "rank1": metrics.rank1,
        "rank5": metrics.rank5,
        "best_accuracy": metrics.best.accuracy,
        **{f"tar_at_far_{far:g}": point.tar for far, point in metrics.tar_at_far},
        "d_prime": d_prime(vectors, labels),
        "aligned_by": {m: methods.count(m) for m in MODES if m in methods},
    }


def bench_cost(
    faces: list[Face], embedder: Embedder, locator: LandmarkLocator, repeat: int
) -> dict[str, float]:
    sample = faces[:: max(1, len(faces) // 20)]
    detector = HaarFaceDetector()
    chips = np.stack([align_face(f.pixels, f.detection, embedder.chip).chip for f in sample])

    def locate() -> object:
        return [locator.locate(f.pixels, [f.detection.landmark_region()]) for f in sample]

    # Ratios are landmarks / the other step, per repeat, with their spread.
    over_detect = time_pair(lambda: [detector.detect(f.pixels) for f in sample], locate, repeat)
    over_embed = time_pair(lambda: [embedder.embed(chip[None]) for chip in chips], locate, repeat)
    per_face = 1e3 / len(sample)
    return {
        "landmarks_ms_per_face": over_detect.baseline_s * per_face,
        "haar_detect_ms_per_image": over_detect.ours_s * per_face,
        "descriptor_ms_per_face": over_embed.ours_s * per_face,
        "landmarks_over_detect": over_detect.ratio.to_json(),
        "landmarks_over_descriptor": over_embed.ratio.to_json(),
    }


def print_table(results: dict[str, Any]) -> None:
    print(
        f"{results['faces']} of {results['images']} images with a Haar face, "
        f"{results['model_version']}"
    )
    header = ("align", "rank-1", "rank-5", "best acc", "TAR@1%", "TAR@0.1%", "d-prime")
    print("{:<10}{:>9}{:>9}{:>10}{:>9}{:>10}{:>9}  aligned by".format(*header))
    for mode, r in results["accuracy"].items():
        values = (r["rank1"], r["rank5"], r["best_accuracy"], r["tar_at_far_0.01"])
        print(
            "{:<10}{:>9.4f}{:>9.4f}{:>10.4f}{:>9.4f}".format(mode, *values)
            + f"{r['tar_at_far_0.001']:>10.4f}{r['d_prime']:>9.3f}  {r['aligned_by']}"
        )
    cost = results["cost"]
    print(
        f"landmarks: {cost['landmarks_ms_per_face']:.2f} ms/face, "
        f"{cost['landmarks_over_detect']['verdict']} Haar detection "
        f"({cost['haar_detect_ms_per_image']:.2f} ms/image), "
        f"{cost['landmarks_over_descriptor']['verdict']} the descriptor "
        f"({cost['descriptor_ms_per_face']:.2f} ms/face)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dataset", type=Path, required=True, help="DATASET/<identity>/<image>, e.g. att_faces"
    )
    parser.add_argument("--roll", type=float, default=0.0, help="random roll within +-DEG")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = Settings.from_env()
    embedder = load_embedder(str(ensure_pretrained(settings)))
    locator = LandmarkLocator(ensure_landmark_model(settings))
    dataset = load_dataset(args.dataset)
    faces = load_faces(dataset, detector_from_settings(settings), locator, args.roll)
    images = len(dataset.images)
    results: dict[str, Any] = {
        "dataset": str(args.dataset),
        "roll_degrees": args.roll,
        "images": images,
        "faces": len(faces),
        "model_version": embedder.model_version,
        "accuracy": {mode: score(faces, embedder, mode) for mode in MODES},
        "cost": bench_cost(faces, embedder, locator, args.repeat),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    print_table(results)
    path = RESULTS.with_name(f"alignment-roll{args.roll:g}.json") if args.roll else RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
