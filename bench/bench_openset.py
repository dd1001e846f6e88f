"""The open-set threshold's tail fit, on people the identify benchmark never uses.

    .venv/bin/python bench/bench_openset.py [--far 0.01]

Development data only (``../shared/data/lfw_view1``, ``FACERANK_BENCH_DATA`` names it
elsewhere), never committed. ``bench/bench_identify.py`` quotes LFW View 1's people with at
least 6 photos; this script tunes on the others, those with 3 to 5 photos, sorted by name: the
first half enrolled with their first 2 photos (the largest face of each, as enrollment takes
it), every later photo of everyone a query. Faces are found and embedded by the default
pipeline (the user's settings: SSD, landmarks, the pretrained ``dlib-r34-v1``).

The open-set threshold (``facerank/openset.py``) is computed from the gallery alone, its
generalised Pareto tail fitted two ways on the same impostor similarities, side by side: the
method of moments (the fit before this script) and maximum likelihood (``pareto_fit``, the fit
now). Each is scored on the queries: identification accuracy of the enrolled people (largest
face, right identity, within the threshold) and false matches of the never-enrolled (any face
within the threshold of some identity), the rate ``FACERANK_OPEN_SET_FAR`` asks to bound.

Writes ``bench/results/openset.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import facerank.openset as openset
from facerank.imaging import decode_image
from facerank.pipeline import FacePipeline
from facerank.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("FACERANK_BENCH_DATA") or ROOT.parent / "shared" / "data")
RESULTS = ROOT / "bench" / "results" / "openset.json"
PAIR_THRESHOLD = 0.4
"""dlib-r34-v1's pair threshold (its card): the open-set one never exceeds it."""

Fit = Callable[[np.ndarray], tuple[float, float]]


def moments_fit(excess: np.ndarray) -> tuple[float, float]:
    """The generalised Pareto by the method of moments: what ``facerank/openset.py`` used."""
    mean, var = float(np.mean(excess)), float(np.var(excess))
    return 0.5 * (1.0 - mean * mean / var), 0.5 * mean * (mean * mean / var + 1.0)


def embed_people(pipeline: FacePipeline, low: int, high: int) -> dict[str, list[np.ndarray]]:
    """Per person with ``low`` to ``high`` photos: each photo's face embeddings, largest first."""
    root = DATA / "lfw_view1" / "images"
    people = sorted(p for p in root.iterdir() if low <= len(list(p.glob("*.jpg"))) <= high)
    embedded = {}
    for done, folder in enumerate(people, 1):
        photos = []
        for path in sorted(folder.glob("*.jpg")):
            faces = pipeline.analyze(decode_image(path.read_bytes()).pixels).faces
            photos.append(pipeline.embed(faces) if faces else np.zeros((0, 0), np.float32))
        embedded[folder.name] = photos
        if done % 50 == 0:
            print(f"embedded {done}/{len(people)} people", file=sys.stderr, flush=True)
    return embedded


def split(
    embedded: dict[str, list[np.ndarray]], enrolled_photos: int
) -> tuple[set[str], np.ndarray, np.ndarray, list[tuple[str, np.ndarray]]]:
    """Enrolled people, gallery rows and their identity codes, and the queries."""
    people = sorted(embedded)
    enrolled = set(people[: len(people) // 2])
    rows, names, queries = [], [], []
    for person in people:
        for index, faces in enumerate(embedded[person]):
            if index >= enrolled_photos:
                queries.append((person, faces))
            elif person in enrolled and len(faces):
                rows.append(faces[0])
                names.append(person)
    return enrolled, np.stack(rows), np.asarray(names), queries


def score(
    enrolled: set[str],
    gallery: np.ndarray,
    names: np.ndarray,
    queries: Sequence[tuple[str, np.ndarray]],
    threshold: float,
) -> dict[str, Any]:
    identities, codes = np.unique(names, return_inverse=True)

    def nearest(face: np.ndarray) -> tuple[str, float]:
        distances = np.sqrt(np.clip(2.0 - 2.0 * (gallery @ face), 0.0, 4.0))
        best = np.full(len(identities), np.inf)
        np.minimum.at(best, codes, distances)
        index = int(np.argmin(best))
        return str(identities[index]), float(best[index])

    hits = known = strangers = false_matches = 0
    for person, faces in queries:
        if person in enrolled:
            known += 1
            if len(faces):
                who, distance = nearest(faces[0])
                hits += who == person and distance <= threshold
        else:
            strangers += 1
            false_matches += any(nearest(face)[1] <= threshold for face in faces)
    return {
        "threshold": round(threshold, 4),
        "identification_accuracy": round(hits / known, 4),
        "stranger_false_match_rate": round(false_matches / strangers, 4),
        "false_matches": false_matches,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--far", type=float, default=0.01)
    args = parser.parse_args(argv)
    started = time.monotonic()
    settings = Settings.from_env()
    pipeline = FacePipeline.from_settings(settings)
    enrolled, gallery, names, queries = split(embed_people(pipeline, 3, 5), enrolled_photos=2)
    codes = np.unique(names, return_inverse=True)[1]
    fits: dict[str, Fit] = {
        "moments (before)": moments_fit,
        "maximum likelihood (now)": openset.pareto_fit,
    }
    results = {}
    for label, fit in fits.items():
        openset.pareto_fit = fit  # the one step that differs; everything else is today's code
        try:
            threshold = openset.open_set_threshold(
                gallery, codes, pair_threshold=PAIR_THRESHOLD, target=args.far
            )
        finally:
            openset.pareto_fit = fits["maximum likelihood (now)"]
        results[label] = score(enrolled, gallery, names, queries, threshold)
        print(label, results[label], flush=True)
    report = {
        "command": "bench/bench_openset.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "pipeline": f"{pipeline.model_version}, {settings.detector} detector, "
        f"{pipeline.align_mode} alignment",
        "data": "LFW View 1 people with 3-5 photos (none of bench_identify's): the first half "
        "enrolled with 2 photos, every later photo a query",
        "far": args.far,
        "gallery_identities": len(set(names.tolist())),
        "gallery_faces": len(gallery),
        "enrolled_queries": sum(person in enrolled for person, _ in queries),
        "stranger_queries": sum(person not in enrolled for person, _ in queries),
        "fits": results,
        "wall_s": round(time.monotonic() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
