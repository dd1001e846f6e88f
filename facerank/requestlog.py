"""The one log line of a refused HTTP request, the same in every facerank server.

A refusal (a 400 for a non-image, a malformed event, a 413) is the client's business: one
line with what an operator greps for (method, path, status, facerank's error code, the request
id the client or proxy sent) and the reason, never a traceback. Tracebacks are kept for what
nobody expected: those go through ``log.exception`` where they happen.
"""

from __future__ import annotations

import logging
import re
import uuid

_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""A request id echoed into logs: plain characters only, so a header cannot forge lines."""


def request_id(*given: str | None) -> str:
    """The first plain id given (``X-Request-ID``, a CloudEvent's id, ...), else a new one."""
    for candidate in given:
        if candidate and _PLAIN_ID.fullmatch(candidate):
            return candidate
    return uuid.uuid4().hex[:16]


def log_refusal(
    log: logging.Logger,
    method: str,
    path: str,
    status: int,
    code: str,
    rid: str,
    reason: str,
) -> None:
    """``POST / 400 bad_event request_id=...: reason`` (WARNING for a 5xx, else INFO)."""
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(level, "%s %s %d %s request_id=%s: %s", method, path, status, code, rid, reason[:300])
