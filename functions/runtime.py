"""What every facerank function shares: CloudEvents in and out of Flask, errors, serving.

Knative contracts these helpers keep in one place:

* a sink answers an empty 2xx or a valid CloudEvent; any other 2xx body makes Knative treat
  the reply as a malformed event and retry forever;
* a retryable failure must be a 5xx (Knative retries 5xx, 404, 408, 409 and 429), a final one
  a 4xx, so the broker's delivery spec and dead-letter sink do their job;
* the port comes from ``PORT`` (Knative injects it), and SIGTERM means drain and exit.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from cloudevents.conversion import to_binary
from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import CloudEvent, from_http
from flask import Flask, Request, Response, jsonify
from waitress.server import create_server

from facerank.errors import FacerankError

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 1024 * 1024


class BadEventError(FacerankError):
    """The request is not a CloudEvent we can read."""

    code = "bad_event"


def read_cloudevent(request: Request) -> CloudEvent:
    """Parse a binary- or structured-mode CloudEvent, or raise :class:`BadEventError`."""
    try:
        return from_http(dict(request.headers), request.get_data())
    except (CloudEventError, ValueError, TypeError) as exc:
        raise BadEventError(f"not a CloudEvent: {exc}") from None


def cloudevent_response(event: CloudEvent, status: int = 200) -> Response:
    """A binary-mode CloudEvent reply, which Knative routes back into the broker."""
    headers, body = to_binary(event)
    return Response(body, status=status, headers={**headers, "content-type": "application/json"})


def empty_response(status: int = 202) -> Response:
    return Response(status=status)


def error_response(exc: FacerankError, status: int | None = None) -> tuple[Response, int]:
    """JSON error body with the error's stable code; 503 when retrying may help, else 400."""
    chosen = status or (503 if exc.retryable else 400)
    return jsonify(error={"code": exc.code, "message": str(exc)}), chosen


def create_function_app(name: str) -> Flask:
    """A Flask app with the limits and the health endpoint every function needs."""
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = MAX_EVENT_BYTES

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    @app.errorhandler(FacerankError)
    def facerank_error(exc: FacerankError) -> tuple[Response, int]:
        log.warning("%s: %s", exc.code, exc)
        return error_response(exc)

    return app


def listen_port(default: int) -> int:
    """``PORT`` as Knative injects it, else the component's default from the settings."""
    return int(os.environ.get("PORT", default))


def serve(
    app: Any, *, port: int, host: str | None = None, on_stop: Callable[[], None] | None = None
) -> None:
    """Serve ``app`` with waitress until SIGTERM or SIGINT, then run ``on_stop`` and return.

    Binds to loopback unless told otherwise (``FACERANK_LISTEN_HOST=0.0.0.0`` in containers),
    so a process started on a laptop is not reachable from the network by default.
    """
    host = host or os.environ.get("FACERANK_LISTEN_HOST", "127.0.0.1")
    server = create_server(app, host=host, port=port, threads=8, clear_untrusted_proxy_headers=True)
    stopped = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stopped.set()
        server.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on http://%s:%s", host, port)
    try:
        server.run()
    except OSError:
        if not stopped.is_set():
            raise
    finally:
        if on_stop is not None:
            on_stop()
