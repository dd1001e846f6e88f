"""Pipeline-core benchmark: each figure beside its baseline, measured in the same run.

    .venv/bin/python bench/bench_pipeline.py [--repeat N]

Prints a table and writes ``bench/results/pipeline.json``. Comparisons:

* detection: ``HaarFaceDetector.detect`` (grey conversion, confidence, eye search) against a
  bare ``CascadeClassifier.detectMultiScale`` on the same 640x480 photo: the budget is
  "no slower than Haar itself costs";
* embedding: ``lbp-v0`` on batches of 64 chips against one chip per call;
* files: ``FacePipeline.analyze_files`` (threads, bounded look-ahead) against a plain loop;
* SavedModel serving: the exported signature against ``keras.Model.predict`` per request;
* detectors (needs ``facerank models fetch``): face-api's SSD against Haar per image, and the
  whole default pipeline (detect + 68 landmarks + dlib-r34-v1 embedding) with SSD (the new
  default) against Haar (the old one), on the same photo at 640x480 and at LFW's 250x250, calls
  alternated; medians with the 10th and 90th percentiles. The budget: the new default at most
  1.5x the old per image.
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


def timed(contenders: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Seconds of each call, contenders alternated so background load hits all alike."""
    for fn in contenders.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def spread(seconds: list[float]) -> dict[str, float]:
    """Median and 10th/90th percentiles, in milliseconds."""
    p10, p50, p90 = np.percentile(np.array(seconds) * 1e3, [10, 50, 90])
    return {"median_ms": float(p50), "p10_ms": float(p10), "p90_ms": float(p90)}


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


def photo_250x250() -> np.ndarray:
    """The astronaut framed as LFW frames its faces: the face about 40% of a 250 px square."""
    head = skdata.astronaut()[0:230, 110:340]
    return cv2.resize(head, (250, 250), interpolation=cv2.INTER_AREA)


def bench_detectors(repeat: int) -> dict[str, object]:
    from facerank.descriptor.landmarks import landmark_model_dir
    from facerank.descriptor.pretrained import pretrained_model_dir
    from facerank.descriptor.ssd import ssd_model_dir
    from facerank.embedding.savedmodel import SavedModelEmbedder
    from facerank.faces import LandmarkLocator, SsdFaceDetector
    from facerank.settings import Settings

    settings = Settings.from_env()
    folders = (
        ssd_model_dir(settings),
        landmark_model_dir(settings),
        pretrained_model_dir(settings),
    )
    if not all(folder.is_dir() for folder in folders):
        raise SystemExit("the detector benchmark needs `facerank models fetch` first")
    embedder = SavedModelEmbedder(pretrained_model_dir(settings))
    locator = LandmarkLocator(landmark_model_dir(settings))
    detectors = {"haar": HaarFaceDetector(), "ssd": SsdFaceDetector(ssd_model_dir(settings))}
    pipelines = {
        name: FacePipeline(detector, embedder, align_mode="landmarks", locator=locator)
        for name, detector in detectors.items()
    }

    def whole(pipeline: FacePipeline, image: np.ndarray) -> object:
        return pipeline.embed(pipeline.analyze(image).faces)

    results: dict[str, object] = {}
    for size, image in (("640x480", photo_640x480()), ("250x250", photo_250x250())):
        faces = {name: len(d.detect(image)) for name, d in detectors.items()}
        if faces != {"haar": 1, "ssd": 1}:
            raise SystemExit(f"{size}: expected one face for each detector, got {faces}")
        samples = timed(
            {
                "detect_haar": lambda d=detectors["haar"], i=image: d.detect(i),
                "detect_ssd": lambda d=detectors["ssd"], i=image: d.detect(i),
                "pipeline_haar": lambda p=pipelines["haar"], i=image: whole(p, i),
                "pipeline_ssd": lambda p=pipelines["ssd"], i=image: whole(p, i),
            },
            repeat,
        )
        figures = {name: spread(times) for name, times in samples.items()}
        median = {name: figures[name]["median_ms"] for name in figures}
        results[size] = {
            **figures,
            "detect_ratio_ssd_to_haar": median["detect_ssd"] / median["detect_haar"],
            "pipeline_ratio_new_to_old": median["pipeline_ssd"] / median["pipeline_haar"],
        }
    return results


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
        "detectors": bench_detectors(args.repeat),
    }
    for name, figures in results.items():
        if name in ("machine", "detectors"):
            continue
        print(f"{name:<24} " + "  ".join(f"{k}={v:,.2f}" for k, v in figures.items()))
    for size, figures in results["detectors"].items():
        for name, value in figures.items():
            shown = (
                f"{value:.2f}"
                if isinstance(value, float)
                else "{median_ms:.1f} ms (p10 {p10_ms:.1f}, p90 {p90_ms:.1f})".format(**value)
            )
            print(f"{size:<8} {name:<26} {shown}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
