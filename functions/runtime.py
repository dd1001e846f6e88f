"""What every facerank function shares: CloudEvents in and out of Flask, errors, serving.

Knative contracts these helpers keep in one place:

* a sink answers an empty 2xx or a valid CloudEvent; any other 2xx body makes Knative treat
  the reply as a malformed event and retry forever;
* a retryable failure must be a 5xx (Knative retries 5xx, 404, 408, 409 and 429), a final one
  a 4xx, so the broker's delivery spec and dead-letter sink do their job;
* the port comes from ``PORT`` (Knative injects it); that and serving itself (waitress,
  SIGTERM means drain and exit) live in :mod:`facerank.serving`, shared with the broker;
* with an API token configured, every request but the health check must present it (401
  otherwise), checked before the body is read, so a stranger costs no parsing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from cloudevents.http import CloudEvent
from flask import Flask, Request, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from facerank.auth import CHALLENGE, require_token
from facerank.cehttp import from_http, to_binary
from facerank.errors import FacerankError, UnauthorizedError
from facerank.requestlog import log_refusal, request_id

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 1024 * 1024


def read_cloudevent(request: Request) -> CloudEvent:
    """Parse a binary- or structured-mode CloudEvent (data kept as bytes, see
    :func:`facerank.cehttp.json_data`), or raise ``InvalidEventError``."""
    return from_http(request.headers, request.get_data())


def cloudevent_response(event: CloudEvent, status: int = 200) -> Response:
    """A binary-mode CloudEvent reply, which Knative routes back into the broker."""
    headers, body = to_binary(event)
    return Response(body, status=status, headers=headers)


def empty_response(status: int = 202) -> Response:
    return Response(status=status)


def error_response(exc: FacerankError, status: int | None = None) -> tuple[Response, int]:
    """JSON error body with the error's stable code; 503 when retrying may help, else 400."""
    chosen = status or (503 if exc.retryable else 400)
    return jsonify(error=exc.to_json()), chosen


def create_event_app(
    name: str, handle: Callable[[CloudEvent], CloudEvent | None], *, api_token: str
) -> Flask:
    """A function taking one CloudEvent at ``POST /`` and answering ``handle``'s reply event,
    or an empty 202 when it has none.

    The reply comes only after ``handle`` returned, i.e. once its writes are durable; a
    retryable failure it raises becomes a 503, so the broker retries.
    """
    app = create_function_app(name, api_token=api_token)

    @app.post("/")
    def receive() -> Response:
        reply = handle(read_cloudevent(request))
        return empty_response() if reply is None else cloudevent_response(reply)

    return app


def create_function_app(name: str, *, api_token: str, own_auth: Collection[str] = ()) -> Flask:
    """A Flask app with the limits, the health endpoint and the API token every function needs.

    ``api_token`` is the settings' (empty: not checked), a required argument so that no
    factory can forget it and serve unguarded. ``/healthz`` stays open (kubelet and ``facerank
    up`` probe it without credentials), and so do the paths in ``own_auth``, which check a
    credential of their own (MinIO's webhook sends its ``auth_token``, not ours to choose).
    """
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = MAX_EVENT_BYTES
    open_paths = frozenset({"/healthz", *own_auth})

    @app.before_request
    def check_token() -> None:
        if request.path not in open_paths:
            require_token(api_token, request.headers.get("Authorization"))

    app.register_error_handler(UnauthorizedError, token_refused)

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    @app.errorhandler(FacerankError)
    def facerank_error(exc: FacerankError) -> tuple[Response, int]:
        response, status = error_response(exc)
        refused(status, exc.code, str(exc))
        return response, status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> HTTPException:
        """Flask's own refusals (413 too large, 405, 404) get their one line too."""
        status = exc.code or 500
        refused(status, (exc.name or "error").lower().replace(" ", "_"), exc.description or "")
        return exc

    return app


def token_refused(exc: UnauthorizedError) -> tuple[Response, int]:
    """401 for a request without the API token, with its challenge and its log line."""
    refused(401, exc.code, f"from {request.remote_addr}: no valid API token")
    response, status = error_response(exc, 401)
    response.headers["WWW-Authenticate"] = CHALLENGE
    return response, status


def refused(status: int, code: str, reason: str) -> None:
    """The one log line of the current request's refusal (see :mod:`facerank.requestlog`)."""
    rid = request_id(request.headers.get("X-Request-ID"), request.headers.get("ce-id"))
    log_refusal(log, request.method, request.path, status, code, rid, reason)
