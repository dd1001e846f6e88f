"""The notify function's HTTP face: CloudEvents in, an empty 202 (or an error) out."""

from __future__ import annotations

from flask import Flask, Response, request

from functions.notify.handler import NotifyHandler
from functions.runtime import create_function_app, empty_response, read_cloudevent


def create_app(handler: NotifyHandler, *, api_token: str) -> Flask:
    """POST / takes one event. An unreachable or failing webhook is a 503, which the broker
    retries and finally dead-letters; a webhook refusing the body is a 400, dead-lettered at
    once (the errors' ``retryable`` flags decide, as for every function)."""
    app = create_function_app("facerank-notify", api_token=api_token)

    @app.post("/")
    def receive() -> Response:
        handler.handle(read_cloudevent(request))
        return empty_response()

    return app
