"""A client of the predictor's V1 protocol, shared by ``facerank query`` and the identify function.

Both ask the served predictor rather than loading a model themselves, so an answer always comes
from the model version and the gallery the predictor serves at that moment (it swaps them
together), wherever it runs: this machine under ``facerank up`` or an InferenceService.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from facerank.auth import authorization_header
from facerank.errors import FacerankError

MODEL = "facerank"
"""The name the predictor serves its model under (KServe's ``Model`` name), in every URL."""

READY_PATH = f"/v1/models/{MODEL}"
"""KServe answers 200 here once the model is loaded: what ``facerank up`` waits for."""


def predict_url(base_url: str) -> str:
    """The V1 predict endpoint of the predictor at ``base_url``."""
    return f"{base_url.rstrip('/')}{READY_PATH}:predict"


class PredictorError(FacerankError):
    """The predictor refused the request (a 4xx): sending it again cannot help."""

    code = "predictor_error"


class PredictorUnavailableError(PredictorError):
    """The predictor could not be reached, or failed (a 5xx): a later try may succeed."""

    code = "predictor_unavailable"
    retryable = True


class PredictorUnauthorizedError(PredictorError):
    """The predictor refused the caller's token (401/403): the caller's configuration is
    wrong, not the photo, so an event is retried (and finally dead-lettered), never answered
    with a result that blames the photo."""

    code = "predictor_unauthorized"
    retryable = True


def predict(
    base_url: str, image: bytes, top_k: int, *, api_token: str = "", timeout: float = 60.0
) -> dict[str, Any]:
    """One V1 predict call, presenting ``api_token`` when set; the first (only) prediction."""
    body = {"instances": [{"image": {"b64": base64.b64encode(image).decode()}, "top_k": top_k}]}
    url = predict_url(base_url)
    request = urllib.request.Request(  # noqa: S310 - the user names the predictor URL
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **authorization_header(api_token)},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.load(response)["predictions"][0]
    except urllib.error.HTTPError as exc:
        error: type[PredictorError] = PredictorError
        if exc.code >= 500:
            error = PredictorUnavailableError
        elif exc.code in (401, 403):
            error = PredictorUnauthorizedError
        raise error(f"{url} answered {exc.code}: {_error_text(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PredictorUnavailableError(
            f"no predictor at {base_url} ({reason}); is `facerank up` running?"
        ) from None
    except (ValueError, KeyError, IndexError) as exc:
        raise PredictorError(
            f"{url} answered something that is not a V1 prediction: {exc}"
        ) from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    raw = exc.read().decode("utf-8", "replace")
    try:
        return str(json.loads(raw).get("error", raw))
    except ValueError:
        return raw[:500]
