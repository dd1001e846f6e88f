"""``facerank query IMAGE``: ask any facerank predictor who the faces in a photo look like.

Speaks KServe's V1 protocol over plain HTTP, so it works against ``facerank up`` on this
machine and against the InferenceService of a cluster alike (``--url``).
"""

from __future__ import annotations

import argparse
import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from facerank.auth import authorization_header
from facerank.cli.output import emit_json
from facerank.errors import FacerankError
from facerank.serving import loopback_url
from facerank.settings import Settings

MODEL = "facerank"


class PredictorError(FacerankError):
    """The predictor could not be reached, or refused the request."""

    code = "predictor_error"


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
        "--url", help="predictor base URL (default http://127.0.0.1:$FACERANK_PREDICTOR_PORT)"
    )
    parser.add_argument("--json", action="store_true", help="print the prediction as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    base = args.url or loopback_url(settings.predictor_port)
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


def predict(base_url: str, image: bytes, top_k: int, *, api_token: str = "") -> dict[str, Any]:
    """One V1 predict call, presenting ``api_token`` when set; the first (only) prediction."""
    body = {"instances": [{"image": {"b64": base64.b64encode(image).decode()}, "top_k": top_k}]}
    url = f"{base_url.rstrip('/')}/v1/models/{MODEL}:predict"
    request = urllib.request.Request(  # noqa: S310 - the user names the predictor URL
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **authorization_header(api_token)},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return json.load(response)["predictions"][0]
    except urllib.error.HTTPError as exc:
        raise PredictorError(f"{url} answered {exc.code}: {_error_text(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PredictorError(
            f"no predictor at {base_url} ({reason}); is `facerank up` running?"
        ) from None
    except (ValueError, KeyError, IndexError) as exc:
        raise PredictorError(
            f"{url} answered something that is not a V1 prediction: {exc}"
        ) from None


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


def _error_text(exc: urllib.error.HTTPError) -> str:
    raw = exc.read().decode("utf-8", "replace")
    try:
        return str(json.loads(raw).get("error", raw))
    except ValueError:
        return raw[:500]
