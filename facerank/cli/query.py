"""``facerank query IMAGE``: ask any facerank predictor who the faces in a photo look like.

Speaks KServe's V1 protocol over plain HTTP, so it works against ``facerank up`` on this
machine and against the InferenceService of a cluster alike (``--url``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from facerank.cli.output import emit_json
from facerank.predictor import PredictorError, predict
from facerank.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query",
        help="rank enrolled identities for the faces in a photo",
        description="Send IMAGE to a facerank predictor (KServe V1 protocol) and print, for "
        "each face found, the closest enrolled identities with their distances.",
    )
    parser.add_argument("image", type=Path, metavar="IMAGE")
    parser.add_argument("--top-k", type=int, default=3, help="identities per face (default 3)")
    parser.add_argument(
        "--url",
        help="predictor base URL (default $FACERANK_PREDICTOR_URL, else "
        "http://127.0.0.1:$FACERANK_PREDICTOR_PORT)",
    )
    parser.add_argument("--json", action="store_true", help="print the prediction as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    base = args.url or settings.predictor_base_url
    try:
        image = args.image.read_bytes()
    except OSError as exc:
        raise PredictorError(f"cannot read {args.image}: {exc.strerror or exc}") from None
    prediction = predict(base, image, args.top_k, api_token=settings.api_token)
    if args.json:
        emit_json(prediction)
    else:
        print_ranking(prediction)
    return 0


def print_ranking(prediction: dict[str, Any]) -> None:
    faces = prediction.get("faces", [])
    print(f"model version: {prediction.get('model_version')}; {len(faces)} face(s)")
    for number, face in enumerate(faces, start=1):
        box = ",".join(str(v) for v in face["box"])
        print(
            f"face {number}  box {box}  confidence {face['confidence']:.3f}  "
            f"detector {face['detector']}"
        )
        print(f"  {'rank':<5}{'identity':<32}{'distance':>9}{'similarity':>11}  match")
        for rank, match in enumerate(face["matches"], start=1):
            print(
                f"  {rank:<5}{match['identity']:<32}{match['distance']:>9.3f}"
                f"{match['similarity']:>11.3f}  {'yes' if match['match'] else 'no'}"
            )
