"""``facerank models ...``: pretrained models on this machine.

``facerank models fetch`` downloads face-api's pretrained descriptor once (npm, verified,
cached) and converts it into a facerank model directory, so ``FACERANK_MODEL`` can name it.
Conversion imports TensorFlow, but only inside the command, so the CLI still starts fast.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from facerank.cli.output import emit_json
from facerank.descriptor.pretrained import (
    PRETRAINED_VERSION,
    ensure_pretrained,
    package_model_dir,
)
from facerank.embedding.savedmodel import ModelCard
from facerank.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="fetch pretrained models")
    commands = parser.add_subparsers(title="models commands", required=True, metavar="COMMAND")
    fetch = commands.add_parser(
        "fetch",
        help=f"fetch and convert the pretrained descriptor ({PRETRAINED_VERSION})",
        description="Fetch @vladmandic/face-api with npm (once; the verified tarball is cached "
        "and reused offline), keep its TF.js weights, rebuild dlib's ResNet face descriptor "
        "in Keras with them and export it as a facerank model directory. Does nothing when "
        "the model is already there. Prints the model directory and version.",
    )
    fetch.add_argument("--json", action="store_true", help="print one JSON object")
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
    card = ModelCard.read(model_dir)
    result = {
        "version": card.version,
        "model_dir": str(model_dir),
        "package_model_dir": str(package_model_dir(settings)),
        "dim": card.dim,
        "chip": card.chip.to_json(),
    }
    if args.json:
        emit_json(result)
        return 0
    print(f"model {card.version}: {model_dir}")
    print(f"TF.js weights: {result['package_model_dir']}")
    print(f"use it with: FACERANK_MODEL={model_dir}")
    return 0
