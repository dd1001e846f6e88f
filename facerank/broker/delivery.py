"""One delivery attempt to a subscriber, classified the way Knative's dispatcher does.

Why not :func:`facerank.events.send_event`: it owns its retry loop, while the broker must
persist every attempt and schedule the next one itself (backoff waits must not hold a worker,
and a restart must not forget how often an event was tried). So this module makes exactly
one POST and says what happened: delivered (maybe with a reply event), worth retrying, or not.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass

from cloudevents.http import CloudEvent

from facerank.auth import authorization_header
from facerank.cehttp import carries_event, from_http, to_binary
from facerank.errors import InvalidEventError

RETRYABLE_STATUSES = frozenset({404, 408, 409, 429})
"""4xx answers Knative retries (a pod becoming ready, timeouts, conflicts, rate limits);
every 5xx and every failure to get an answer are retried too."""

MAX_REPLY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AttemptResult:
    status: int | None
    """HTTP status; ``None`` when no answer came (refused, reset, timed out)."""
    error: str = ""
    """Why the attempt failed; empty on success."""
    retryable: bool = False
    reply: CloudEvent | None = None

    @property
    def delivered(self) -> bool:
        return not self.error


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is a final failure for Knative, not an invitation to POST elsewhere."""

    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
"""Subscribers are local services: an ``http_proxy`` in the environment must not reroute them."""


def is_retryable(status: int | None) -> bool:
    return status is None or status >= 500 or status in RETRYABLE_STATUSES


def attempt(url: str, event: CloudEvent, *, timeout: float | None, api_token: str) -> AttemptResult:
    """POST ``event`` in binary mode to ``url`` once, presenting ``api_token`` (empty: none).

    Subscribers are facerank's functions, which require the API token when one is set.
    """
    headers, body = to_binary(event)
    headers.update(authorization_header(api_token))
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            reply_headers = dict(response.headers.items())
            content = response.read(MAX_REPLY_BYTES + 1)
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return AttemptResult(exc.code, f"HTTP {exc.code}", is_retryable(exc.code))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        return AttemptResult(None, str(getattr(exc, "reason", exc)) or type(exc).__name__, True)
    return _answer(status, reply_headers, content)


def _answer(status: int, headers: dict[str, str], content: bytes) -> AttemptResult:
    """A 2xx: delivered, with the reply event if the body is one.

    A malformed reply fails the attempt as retryable, as Knative's broker answers such a
    reply with 502 to its own dispatcher; any other body is not an event and is discarded.
    """
    if not carries_event(headers):
        return AttemptResult(status)
    if len(content) > MAX_REPLY_BYTES:
        return AttemptResult(status, f"reply event over {MAX_REPLY_BYTES} bytes", True)
    try:
        return AttemptResult(status, reply=from_http(headers, content))
    except InvalidEventError as exc:
        return AttemptResult(status, f"invalid reply event: {exc}", True)
