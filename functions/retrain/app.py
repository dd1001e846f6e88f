"""The retrain function's HTTP face: a Flask app speaking CloudEvents."""

from __future__ import annotations

from flask import Flask, Response, request

from functions.retrain.handler import RetrainHandler
from functions.runtime import (
    cloudevent_response,
    create_function_app,
    empty_response,
    read_cloudevent,
)


def create_app(handler: RetrainHandler, *, api_token: str) -> Flask:
    """POST / takes one event; the reply is retrain.started / retrain.refused or an empty 202."""
    app = create_function_app("facerank-retrain", api_token=api_token)

    @app.post("/")
    def receive() -> Response:
        reply = handler.handle(read_cloudevent(request))
        return empty_response() if reply is None else cloudevent_response(reply)

    return app
