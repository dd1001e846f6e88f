"""The dead-letter sink's HTTP face: one CloudEvent in, one JSON object in the bucket out.

Why a function rather than a log line: a dead letter is work facerank failed to do (a photo
never enrolled, a removal never applied). Logs rotate away; the bucket keeps each event, with
the error attributes Knative adds (``knativeerrordest``, ``knativeerrorcode``,
``knativeerrordata``), until an operator has read it and replayed or dropped it. It is the
cluster's counterpart of the local broker's ``dead-letter/`` folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime

from cloudevents.http import CloudEvent
from flask import Flask, Response, request

from facerank.cehttp import to_document
from facerank.events import describe
from facerank.storage import ObjectStore
from functions.runtime import create_function_app, empty_response, read_cloudevent

log = logging.getLogger(__name__)

BUCKET = "dead-letter"
_SAFE_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def dead_letter_key(event: CloudEvent) -> str:
    """``<type>/<hash>.json``: browsable by event type; the hash of source, id and failed
    destination makes a dead letter delivered twice overwrite itself instead of doubling."""
    identity = "\0".join(
        str(event.get(name, "")) for name in ("source", "id", "knativeerrordest")
    ).encode("utf-8", "surrogatepass")
    folder = event["type"] if _SAFE_FOLDER.fullmatch(event["type"]) else "other"
    return f"{folder}/{hashlib.sha256(identity).hexdigest()}.json"


def create_app(
    store: ObjectStore,
    bucket: str = BUCKET,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    *,
    api_token: str,
) -> Flask:
    """POST / stores the event and answers an empty 202 once the object is written; a store
    outage answers 503 (see :func:`functions.runtime.create_function_app`)."""
    app = create_function_app("facerank-dead-letter", api_token=api_token)

    @app.post("/")
    def receive() -> Response:
        event = read_cloudevent(request)
        key = dead_letter_key(event)
        document = {"received": clock().isoformat(), "event": to_document(event)}
        store.put(
            bucket,
            key,
            json.dumps(document, ensure_ascii=False, indent=2).encode(),
            content_type="application/json",
        )
        log.error(
            "dead letter %s/%s: %s, last answer %s from %s",
            bucket,
            key,
            describe(event),
            event.get("knativeerrorcode", "-"),
            event.get("knativeerrordest", "-"),
        )
        return empty_response()

    return app
