"""``facerank up``: run the embedded pipeline on this machine.

This build has the pipeline core only, so ``up`` prepares the data directory and its buckets,
then runs every photo already in the faces bucket through decode, detection, alignment and
embedding, and reports per identity what enrollment will find. The event source, broker,
functions and predictor join this command as they are built (see ARCHITECTURE.md); the
command and its data directory stay the same.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from facerank.cli.output import progress
from facerank.errors import InvalidImageError
from facerank.imaging import decode_image
from facerank.pipeline import FacePipeline, ordered_map
from facerank.settings import Settings
from facerank.storage import ObjectInfo, ObjectStore, open_store

UNFILED = "(no identity folder)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the facerank pipeline on this machine",
        description="Prepare the data directory and run the pipeline over the faces bucket.",
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    parser.set_defaults(handler=run)


@dataclass
class IdentityReport:
    photos: int = 0
    with_face: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    for bucket in (settings.faces_bucket, settings.gallery_bucket, settings.models_bucket):
        store.ensure_bucket(bucket)
    pipeline = FacePipeline.from_settings(settings)
    log(f"store: {store.description}")
    log(f"model: {pipeline.model_version}")
    if settings.store == "folder":
        log(f"drop photos into {settings.buckets_dir / settings.faces_bucket}/<identity>/<file>")

    objects = list(store.list(settings.faces_bucket))
    reports = scan(store, settings, pipeline, objects, show_progress=args.progress)
    print_summary(reports)
    log(
        "this build runs the pipeline core; the event pipeline and the predictor on port "
        f"{settings.predictor_port} are not part of it yet (see ARCHITECTURE.md)"
    )
    return 0


def scan(
    store: ObjectStore,
    settings: Settings,
    pipeline: FacePipeline,
    objects: list[ObjectInfo],
    *,
    show_progress: bool | None,
) -> dict[str, IdentityReport]:
    """Run every photo through the pipeline and tally the outcome per identity folder."""

    def faces_in(info: ObjectInfo) -> int | InvalidImageError:
        data = store.get(settings.faces_bucket, info.key).data
        try:
            pixels = decode_image(
                data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
            ).pixels
        except InvalidImageError as exc:
            return exc
        return len(pipeline.detector.detect(pixels))

    reports: dict[str, IdentityReport] = defaultdict(IdentityReport)
    outcomes = ordered_map(faces_in, objects, workers=os.cpu_count() or 1)
    for info, outcome in zip(
        objects,
        progress(outcomes, total=len(objects), unit="photo", enabled=show_progress),
        strict=True,
    ):
        report = reports[info.key.split("/", 1)[0] if "/" in info.key else UNFILED]
        report.photos += 1
        if isinstance(outcome, InvalidImageError):
            report.rejected[outcome.code] += 1
        elif outcome == 0:
            report.rejected["no_face"] += 1
        else:
            report.with_face += 1
    return dict(reports)


def print_summary(reports: dict[str, IdentityReport]) -> None:
    if not reports:
        log("the faces bucket is empty")
        return
    print(f"{'identity':<32} {'photos':>6} {'faces':>6}  rejected")
    for identity in sorted(reports):
        r = reports[identity]
        rejected = ", ".join(f"{code}={n}" for code, n in sorted(r.rejected.items())) or "-"
        print(f"{identity:<32} {r.photos:>6} {r.with_face:>6}  {rejected}")


def log(message: str) -> None:
    print(f"facerank up: {message}", file=sys.stderr)
