"""Haar against face-api's SSD on real photos: faces found, score thresholds, box geometry.

    .venv/bin/python bench/survey_detectors.py --att DIR --lfw DIR [--samples DIR] [--boxes DIR]

Development data only (AT&T's 400 faces, LFW's View 1 images); nothing here is a test. Needs
``facerank models fetch`` (the SSD and the landmark net in the model cache). Measures, with the
default detection settings of each detector:

* faces found: AT&T photos with at least one face; LFW View 1 photos with none; face-api's
  sample photos, faces per photo (``--boxes`` draws both detectors' boxes into PNGs to look at);
* the SSD score threshold: the lowest score of the face found on AT&T photos against the
  highest score anything reaches on scikit-image's photos without a human face (at threshold
  0.05, so near misses show too);
* the SSD box geometry: the median eye centres of plausible landmarks inside SSD boxes on AT&T,
  the box alignment fallback's calibration (``SSD_BOXES``), and the eye span as a fraction of
  the box width (the plausibility test's ``EYE_SPAN``).

Writes ``bench/results/detectors.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from skimage import data as skdata

from facerank.descriptor.landmarks import landmark_model_dir
from facerank.faces import Detection, FaceDetector, HaarFaceDetector, LandmarkLocator
from facerank.faces.landmarks import landmark_chip, plausible
from facerank.imaging import read_image_file
from facerank.pipeline import detector_from_settings, ordered_map
from facerank.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "detectors.json"
NON_FACES = ("coffee", "chelsea", "rocket", "coins", "moon", "page", "hubble_deep_field")
"""scikit-image photos without a human face (``astronaut`` and ``camera`` have one;
``chelsea``'s cat face is a face to a detector trained on faces, so it shows what that costs)."""


def detect_all(detector: FaceDetector, paths: list[Path]) -> list[list[Detection]]:
    def one(path: Path) -> list[Detection]:
        return detector.detect(read_image_file(path).pixels)

    return list(ordered_map(one, paths, workers=os.cpu_count() or 1))


def att_survey(
    haar: FaceDetector, ssd: FaceDetector, locator: LandmarkLocator, folder: Path
) -> dict[str, Any]:
    paths = sorted(folder.glob("s*/*.pgm"))
    haar_found = detect_all(haar, paths)
    ssd_found = detect_all(ssd, paths)
    eyes, spans = [], []
    for path, found in zip(paths, ssd_found, strict=True):
        if not found:
            continue
        face = found[0]
        pixels = read_image_file(path).pixels
        [points] = locator.locate(pixels, [face.landmark_region()])
        if points is None or not plausible(landmark_chip(points), face.box):
            continue
        x, y, w, h = face.box
        left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
        eyes.append([(left[0] - x) / w, (left[1] - y) / h, (right[0] - x) / w, (right[1] - y) / h])
        spans.append(float(np.linalg.norm(right - left)) / w)
    median = np.median(np.array(eyes), axis=0)
    scores = [found[0].confidence for found in ssd_found if found]
    return {
        "images": len(paths),
        "haar_found": sum(bool(f) for f in haar_found),
        "ssd_found": sum(bool(f) for f in ssd_found),
        "ssd_more_than_one": sum(len(f) > 1 for f in ssd_found),
        "ssd_score_min": float(np.min(scores)),
        "ssd_score_p01": float(np.percentile(scores, 1)),
        "ssd_box_eyes_from": len(eyes),
        "ssd_box_left_eye": [round(float(median[0]), 3), round(float(median[1]), 3)],
        "ssd_box_right_eye": [round(float(median[2]), 3), round(float(median[3]), 3)],
        "ssd_eye_span_of_width": [round(min(spans), 3), round(max(spans), 3)],
    }


def non_face_survey(settings: Settings) -> dict[str, float]:
    """Highest SSD score on each face-free photo, at a threshold low enough to see it."""
    probe = detector_from_settings(
        Settings.from_env({}, cache_dir=settings.cache_dir, min_face_confidence=0.05),
        min_face_size=20,
    )
    highest = {}
    for name in NON_FACES:
        image = getattr(skdata, name)()
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = np.ascontiguousarray(image[..., :3])
        found = probe.detect(image)
        highest[name] = round(max((d.confidence for d in found), default=0.0), 4)
    return highest


def lfw_survey(haar: FaceDetector, ssd: FaceDetector, folder: Path) -> dict[str, int]:
    paths = sorted(folder.glob("*/*.jpg"))
    haar_none = sum(not f for f in detect_all(haar, paths))
    ssd_none = sum(not f for f in detect_all(ssd, paths))
    return {"images": len(paths), "haar_no_face": haar_none, "ssd_no_face": ssd_none}


def sample_survey(
    haar: FaceDetector, ssd: FaceDetector, folder: Path, boxes: Path | None
) -> dict[str, Any]:
    counts = {}
    for path in sorted(folder.glob("sample*.jpg")):
        pixels = read_image_file(path).pixels
        found = {"haar": haar.detect(pixels), "ssd": ssd.detect(pixels)}
        counts[path.name] = {name: len(faces) for name, faces in found.items()}
        if boxes is not None:
            picture = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
            for name, colour in (("haar", (255, 0, 0)), ("ssd", (0, 255, 0))):
                for d in found[name]:
                    x, y, w, h = d.box
                    cv2.rectangle(picture, (x, y), (x + w, y + h), colour, 3)
            boxes.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(boxes / f"{path.stem}.png"), picture)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--att", type=Path, required=True)
    parser.add_argument("--lfw", type=Path, required=True, help="LFW View 1 images/ folder")
    parser.add_argument("--samples", type=Path, help="face-api's demo/ folder")
    parser.add_argument("--boxes", type=Path, help="draw the sample photos' boxes here")
    args = parser.parse_args()
    settings = Settings.from_env()  # the user's model cache, FACERANK_CACHE_DIR included
    ssd = detector_from_settings(settings)
    haar = HaarFaceDetector()
    if isinstance(ssd, HaarFaceDetector):
        raise SystemExit("the SSD is not set up: run `facerank models fetch` first")
    locator = LandmarkLocator(landmark_model_dir(settings))
    results: dict[str, Any] = {
        "att": att_survey(haar, ssd, locator, args.att),
        "non_face_highest_ssd_score": non_face_survey(settings),
    }
    if args.samples:
        results["samples"] = sample_survey(haar, ssd, args.samples, args.boxes)
    print(json.dumps(results, indent=2))
    results["lfw_view1"] = lfw_survey(haar, ssd, args.lfw)
    print(json.dumps(results["lfw_view1"], indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
