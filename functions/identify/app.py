"""The identify function's HTTP face: a Flask app speaking CloudEvents (binary and structured)."""

from __future__ import annotations

from flask import Flask

from functions.identify.handler import IdentifyHandler
from functions.runtime import create_event_app


def create_app(handler: IdentifyHandler, *, api_token: str) -> Flask:
    """POST / takes one event; the reply is face.identified / face.rejected or an empty 202.

    The reply comes only after the result is written. The predictor or the store being
    unavailable raises a retryable error, a 503, so the broker retries.
    """
    return create_event_app(
        "facerank-identify", lambda event: handler.handle(event).reply, api_token=api_token
    )
