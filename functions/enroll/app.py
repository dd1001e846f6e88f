"""The enroll function's HTTP face: a Flask app speaking CloudEvents (binary and structured)."""

from __future__ import annotations

from flask import Flask

from functions.enroll.handler import EnrollHandler
from functions.runtime import create_event_app


def create_app(handler: EnrollHandler, *, api_token: str) -> Flask:
    """POST / takes one event; the reply is an enrolled/rejected/removed event or an empty 202.

    The reply comes only after the gallery writes returned, i.e. once they are durable. A
    retryable failure (store unavailable) raises and becomes a 503, so the broker retries.
    """
    return create_event_app(
        "facerank-enroll", lambda event: handler.handle(event).reply, api_token=api_token
    )
