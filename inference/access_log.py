"""One log line per predictor request, and no traceback for a client's mistake.

KServe logs a rejected request (a 400 for a non-image) as an ``ERROR`` with the whole
traceback of its ``InvalidInput``, then uvicorn's access line, then two timing lines: five to
forty lines for an event that is the client's business, which bury the tracebacks that do
matter. Here every request gets exactly one line,

    POST /v1/models/facerank:predict 400 not_an_image 4 ms request_id=1f3a...: image 0: ...

(method, path, status, error code, duration, request id, and for a refusal its message), and
only the unexpected (a 500) keeps KServe's traceback. The request id is the caller's
``X-Request-ID`` (what Knative's and KServe's proxies set), else one made here. Probes and
scrapes of the open paths that succeed are logged at DEBUG: a kubelet asks every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from kserve.errors import InvalidInput

from facerank.auth import AsgiApp, Receive, Scope, Send
from facerank.errors import FacerankError
from facerank.requestlog import request_id

log = logging.getLogger("facerank.predictor.access")

INVALID_REQUEST = "invalid_request"
"""The code of a request KServe's ``InvalidInput`` refuses for its shape, not its image."""
_REJECTION: ContextVar[dict[str, str] | None] = ContextVar("facerank_rejection", default=None)


def note_rejection(exc: InvalidInput) -> None:
    """Record why this request is refused, for its access line (called where it is raised).

    A mutable holder in a context variable: KServe's middlewares run the route in a task of
    their own, which sees a copy of the context, but the same dictionary.
    """
    holder = _REJECTION.get()
    if holder is not None:
        cause = exc.__cause__
        holder["code"] = cause.code if isinstance(cause, FacerankError) else INVALID_REQUEST
        holder["message"] = str(exc)[:300]


class AccessLogMiddleware:
    """ASGI middleware writing the one line of each HTTP request when its response starts."""

    def __init__(self, app: AsgiApp, *, quiet_paths: Collection[str] = ()) -> None:
        self.app = app
        self.quiet_paths = frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before responding

        async def send_and_note(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with rejection_noted() as rejection:
            try:
                await self.app(scope, receive, send_and_note)
            finally:
                method, path = scope.get("method", "-"), scope.get("path", "-")
                headers = dict(scope.get("headers") or ())
                log_access(
                    method,
                    path,
                    status,
                    "-" if status < 400 else f"http_{status}",
                    rejection,
                    seconds=time.perf_counter() - started,
                    rid=request_id(headers.get(b"x-request-id", b"").decode("latin-1")),
                    quiet=status < 400 and method in ("GET", "HEAD") and path in self.quiet_paths,
                )


@contextmanager
def rejection_noted() -> Iterator[dict[str, str]]:
    """Collect what :func:`note_rejection` records while the request runs in this context."""
    rejection: dict[str, str] = {}
    token = _REJECTION.set(rejection)
    try:
        yield rejection
    finally:
        _REJECTION.reset(token)


def log_access(
    method: str,
    path: str,
    status: int | str,
    code: str,
    rejection: dict[str, str],
    *,
    seconds: float,
    rid: str,
    quiet: bool = False,
) -> None:
    """The one line of a request, HTTP or gRPC (``status``: 400, or ``INVALID_ARGUMENT``);
    ``code`` unless a refusal noted its own."""
    code = rejection.get("code") or code
    line = "%s %s %s %s %.0f ms request_id=%s"
    args: list[Any] = [method, path, status, code, seconds * 1000, rid]
    if "message" in rejection:
        line += ": %s"
        args.append(rejection["message"])
    log.log(logging.DEBUG if quiet else logging.INFO, line, *args)


class _NoRejectionTraceback(logging.Filter):
    """Drops KServe's ``ERROR`` + traceback of an ``InvalidInput``: the access line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InvalidInput)


def install(app: Any, quiet_paths: Collection[str]) -> None:
    """Log each request of KServe's ``app`` once; call before the server starts.

    Added before any other middleware, so those added later (the API token check) wrap it:
    a refused token is logged once, by that check, and never reaches this line.
    """
    app.add_middleware(AccessLogMiddleware, quiet_paths=quiet_paths)
    logging.getLogger("kserve").addFilter(_NoRejectionTraceback())
    # This module's line replaces uvicorn's access line and KServe's per-request timings.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
