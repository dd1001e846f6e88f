"""The enroll function's HTTP face: a Flask app speaking CloudEvents (binary and structured)."""

from __future__ import annotations

from flask import Flask, Response, request

from functions.enroll.handler import EnrollHandler
from functions.runtime import (
    cloudevent_response,
    create_function_app,
    empty_response,
    read_cloudevent,
)


def create_app(handler: EnrollHandler) -> Flask:
    """POST / takes one event; the reply is an enrolled/rejected/removed event or an empty 202.

    The reply comes only after the gallery writes returned, i.e. once they are durable. A
    retryable failure (store unavailable) raises and becomes a 503, so the broker retries.
    """
    app = create_function_app("facerank-enroll")

    @app.post("/")
    def receive() -> Response:
        outcome = handler.handle(read_cloudevent(request))
        if outcome.reply is None:
            return empty_response()
        return cloudevent_response(outcome.reply)

    return app
