"""``facerank embed IMAGE... [--json]``: the embedding of each image's face, the one enrollment
takes (``FACERANK_ENROLL_FACES``; the primary one when it takes all).

Images are decoded, detected and aligned in parallel threads and their chips embedded in
batches, so thousands of images run at the embedder's batch speed rather than one call each.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerank.cli.output import emit_json
from facerank.errors import FacerankError, NoFaceError
from facerank.pipeline import Face, FacePipeline, FileResult
from facerank.progress import progress
from facerank.settings import EnrollFaces, Settings

BATCH_SIZE = 64


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="print the embedding of each image's face (the one enrollment takes)",
        description="For each image, print the model version and the embedding of the face "
        "enrollment takes (FACERANK_ENROLL_FACES; with 'all', the primary one). Plain output "
        "is tab-separated: path, model version, box x,y,w,h, and the space-separated vector; "
        "failures go to stderr. With --json, one JSON object per line on stdout: path, "
        "model_version, box, faces, embedding, or path and error.",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--json", action="store_true", help="JSON Lines output")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class Embedded:
    path: Path
    face_count: int
    face: Face
    vector: np.ndarray


Outcome = Embedded | tuple[Path, FacerankError]
"""One image's result: its embedded face, or why it has none."""


def run(args: argparse.Namespace, settings: Settings) -> int:
    pipeline = FacePipeline.from_settings(settings)
    results = progress(
        pipeline.analyze_files(args.images),
        total=len(args.images),
        unit="img",
        enabled=args.progress,
    )
    failures = 0
    for outcome in embed_subjects(pipeline, results, settings.enroll_faces):
        failures += isinstance(outcome, tuple)
        if args.json:
            emit_json(json_record(outcome, pipeline.model_version))
        else:
            print_plain(outcome, pipeline.model_version)
    return 1 if failures else 0


def embed_subjects(
    pipeline: FacePipeline, results: Iterable[FileResult], policy: EnrollFaces
) -> Iterator[Outcome]:
    """Embed each file's face (:meth:`~facerank.pipeline.ImageFaces.subject` of ``policy``) in
    batches of ``BATCH_SIZE``, yielding in input order."""
    batch: list[tuple[FileResult, Face | None]] = []
    faces_in_batch = 0
    for result in results:
        face = _subject(result, policy)
        batch.append((result, face))
        faces_in_batch += face is not None
        if faces_in_batch >= BATCH_SIZE:
            yield from _embed_batch(pipeline, batch)
            batch, faces_in_batch = [], 0
    yield from _embed_batch(pipeline, batch)


def _subject(result: FileResult, policy: EnrollFaces) -> Face | None:
    if isinstance(result.result, FacerankError):
        return None
    return result.result.subject(policy)


def _embed_batch(
    pipeline: FacePipeline, batch: list[tuple[FileResult, Face | None]]
) -> Iterator[Outcome]:
    """The batch's faces embedded in one call; each file's outcome in batch order."""
    vectors = iter(pipeline.embed([face for _, face in batch if face is not None]))
    for result, face in batch:
        if isinstance(result.result, FacerankError):
            yield result.path, result.result
        elif face is None:
            size = f"{result.result.width}x{result.result.height}"
            yield result.path, NoFaceError(f"no face found in the {size} image")
        else:
            yield Embedded(result.path, len(result.result.faces), face, next(vectors))


def json_record(
    outcome: Embedded | tuple[Path, FacerankError], model_version: str
) -> dict[str, Any]:
    if isinstance(outcome, tuple):
        path, exc = outcome
        return {"path": str(path), "error": exc.to_json()}
    return {
        "path": str(outcome.path),
        "model_version": model_version,
        "box": list(outcome.face.detection.box),
        "faces": outcome.face_count,
        "embedding": [float(v) for v in outcome.vector],
    }


def print_plain(outcome: Outcome, model_version: str) -> None:
    if isinstance(outcome, tuple):
        path, exc = outcome
        print(f"{path}: {exc.code}: {exc}", file=sys.stderr)
        return
    box = ",".join(str(v) for v in outcome.face.detection.box)
    vector = " ".join(f"{v:.6g}" for v in outcome.vector)
    sys.stdout.write(f"{outcome.path}\t{model_version}\t{box}\t{vector}\n")
