"""Pipeline-core benchmark: each figure beside its baseline, measured in the same run.

    .venv/bin/python bench/bench_pipeline.py [--repeat N]

Prints a table and writes ``bench/results/pipeline.json``. Comparisons:

* detection: ``HaarFaceDetector.detect`` (grey conversion, confidence, eye search) against a
  bare ``CascadeClassifier.detectMultiScale`` on the same 640x480 photo: the budget is
  "no slower than Haar itself costs";
* embedding: ``lbp-v0`` on batches of 64 chips against one chip per call;
* files: ``FacePipeline.analyze_files`` (threads, bounded look-ahead) against a plain loop;
* SavedModel serving: the exported signature against ``keras.Model.predict`` per request.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

from facerank.embedding import LbpEmbedder
from facerank.faces import ARCFACE_CHIP_112, HaarFaceDetector
from facerank.pipeline import FacePipeline

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"


def compare(
    ours: Callable[[], object], baseline: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Median seconds of each contender, calls alternated so background load hits both alike."""
    ours()
    baseline()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, times in zip((ours, baseline), samples, strict=True):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(samples[0]), statistics.median(samples[1])


def photo_640x480() -> np.ndarray:
    canvas = np.full((480, 640, 3), 110, np.uint8)
    canvas[:, 64:576] = cv2.resize(skdata.astronaut(), (512, 480), interpolation=cv2.INTER_AREA)
    return canvas


def bench_detection(repeat: int) -> dict[str, float]:
    image = photo_640x480()
    detector = HaarFaceDetector()
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    ours, bare = compare(
        lambda: detector.detect(image),
        lambda: cascade.detectMultiScale(gray, 1.1, 5, minSize=(40, 40)),
        repeat,
    )
    return {"facerank_ms": ours * 1e3, "bare_haar_ms": bare * 1e3, "ratio": ours / bare}


def bench_lbp(repeat: int) -> dict[str, float]:
    embedder = LbpEmbedder()
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (64, 112, 112, 3), dtype=np.uint8)
    batched, single = compare(
        lambda: embedder.embed(chips),
        lambda: [embedder.embed(chips[i : i + 1]) for i in range(len(chips))],
        repeat,
    )
    return {
        "batched_faces_per_s": len(chips) / batched,
        "single_faces_per_s": len(chips) / single,
        "ratio": single / batched,
    }


def bench_files(repeat: int) -> dict[str, float]:
    pipeline = FacePipeline(HaarFaceDetector(), LbpEmbedder())
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(16):
            path = Path(folder) / f"{i}.png"
            cv2.imwrite(
                str(path), cv2.cvtColor(np.roll(photo_640x480(), i * 8, axis=1), cv2.COLOR_RGB2BGR)
            )
            paths.append(path)
        threaded, serial = compare(
            lambda: list(pipeline.analyze_files(paths)),
            lambda: [pipeline.analyze_file(p) for p in paths],
            repeat,
        )
    return {
        "threaded_images_per_s": len(paths) / threaded,
        "serial_images_per_s": len(paths) / serial,
        "ratio": serial / threaded,
    }


def bench_savedmodel(repeat: int) -> dict[str, float]:
    import keras
    import tensorflow as tf

    from facerank.embedding.savedmodel import SavedModelEmbedder, export_embedder

    model = keras.Sequential(
        [
            keras.Input((112, 112, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(128),
        ]
    )
    chip = np.random.default_rng(0).integers(0, 256, (1, 112, 112, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        export_embedder(model, Path(folder) / "m", version="bench", chip=ARCFACE_CHIP_112)
        embedder = SavedModelEmbedder(Path(folder) / "m")
        # The baseline is the fastest honest Keras path for one chip: the model traced once
        # and called, not ``Model.predict``, whose per-call set-up dwarfs a small network.
        traced = tf.function(lambda x: model(x, training=False))
        floats = tf.constant(chip.astype(np.float32))
        signature, keras_call = compare(
            lambda: embedder.embed(chip), lambda: traced(floats).numpy(), repeat
        )
    return {
        "signature_ms": signature * 1e3,
        "keras_traced_call_ms": keras_call * 1e3,
        "ratio": keras_call / signature,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "opencv": cv2.__version__,
        },
        "detection_640x480": bench_detection(args.repeat),
        "lbp_embedding": bench_lbp(max(3, args.repeat // 4)),
        "analyze_16_files": bench_files(max(3, args.repeat // 5)),
        "savedmodel_single_chip": bench_savedmodel(args.repeat),
    }
    for name, figures in results.items():
        if name == "machine":
            continue
        print(f"{name:<24} " + "  ".join(f"{k}={v:,.2f}" for k, v in figures.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
