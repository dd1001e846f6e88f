"""``facerank detect IMAGE...``: faces, scores and alignment status as JSON Lines."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from facerank.cli.output import emit_json
from facerank.errors import InvalidImageError
from facerank.faces import AlignMode, Detection, FaceDetector, LandmarkLocator
from facerank.faces.align import DLIB_CHIP_150, align_face
from facerank.faces.find import find_faces
from facerank.imaging import read_image_file
from facerank.pipeline import (
    alignment_from_settings,
    detector_from_settings,
    image_limits,
    ordered_map,
)
from facerank.progress import progress
from facerank.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="find faces in images and print their boxes as JSON Lines",
        description="Print one JSON object per image: its size and every face found "
        "(largest first) with box [x, y, w, h], confidence, the detector that found it "
        "('ssd', 'hog' when the SSD found none, or 'haar'), the eyes found, and how its chip "
        "is aligned: from 68 landmarks ('landmarks'), its eyes ('eyes') or its box ('box').",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    detector = detector_from_settings(settings)
    limits = image_limits(settings)
    align, locator = alignment_from_settings(settings)

    def detect_file(path: Path) -> dict[str, Any]:
        return detect_record(detector, path, limits, align, locator)

    failures = 0
    records = ordered_map(detect_file, args.images, workers=os.cpu_count() or 1)
    for record in progress(records, total=len(args.images), unit="img", enabled=args.progress):
        failures += "error" in record
        emit_json(record)
    return 1 if failures else 0


def detect_record(
    detector: FaceDetector,
    path: Path,
    limits: dict[str, int],
    align: AlignMode,
    locator: LandmarkLocator | None = None,
) -> dict[str, Any]:
    try:
        pixels = read_image_file(path, **limits).pixels
    except InvalidImageError as exc:
        return {"path": str(path), "error": exc.to_json()}
    found = find_faces(pixels, detector, locator)
    return {
        "path": str(path),
        "width": pixels.shape[1],
        "height": pixels.shape[0],
        "faces": [
            face_record(
                f.detection,
                align_face(pixels, f.detection, DLIB_CHIP_150, align, f.landmarks).method,
            )
            for f in found
        ],
    }


def face_record(detection: Detection, alignment: str) -> dict[str, Any]:
    """``alignment`` says how this face's chip is built: landmarks, eyes or box."""
    return {
        "box": list(detection.box),
        "confidence": round(detection.confidence, 4),
        "detector": detection.detector,
        "alignment": alignment,
        "eyes": [[round(x, 1), round(y, 1)] for x, y in detection.eyes] if detection.eyes else None,
    }
