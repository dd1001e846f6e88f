"""HTTP face of the local broker: the ingress (``POST /``), ``/healthz`` and ``/metrics``.

Errors answer JSON ``{"error": {"code", "message"}}`` like the functions do, so a producer
reads every facerank refusal the same way, and a bad request never takes the broker down.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from facerank.broker.broker import LocalBroker
from facerank.cehttp import from_http
from facerank.errors import InvalidEventError
from facerank.requestlog import log_refusal, request_id

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 1024 * 1024


def create_app(broker: LocalBroker, *, max_event_bytes: int = MAX_EVENT_BYTES) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_event_bytes

    @app.post("/")
    def ingress() -> Response:
        """202 only once the event is queued durably for every matching Trigger."""
        broker.ingest(from_http(request.headers, request.get_data()))
        return Response(status=202)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = broker.metrics.exposition()
        return Response(body, content_type=content_type)

    @app.errorhandler(InvalidEventError)
    def invalid_event(exc: InvalidEventError) -> tuple[Response, int]:
        return _refuse(400, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _refuse(exc.code or 500, code, exc.description or code)

    @app.errorhandler(OSError)
    def queue_unwritable(exc: OSError) -> tuple[Response, int]:
        """503, so the sender retries: the event was not queued and must not be lost."""
        log.error("cannot queue an event: %s", exc)
        return _error("queue_unavailable", f"cannot queue the event: {exc.strerror}"), 503

    return app


def _refuse(status: int, code: str, message: str) -> tuple[Response, int]:
    """The JSON refusal and its one log line (see :mod:`facerank.requestlog`)."""
    rid = request_id(request.headers.get("X-Request-ID"), request.headers.get("ce-id"))
    log_refusal(log, request.method, request.path, status, code, rid, message)
    return _error(code, message), status


def _error(code: str, message: str) -> Response:
    return jsonify(error={"code": code, "message": message})
