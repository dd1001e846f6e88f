"""What the functions taking object events (enroll, identify) share.

Both see every object event of their Trigger and must first agree on the same things: is it
an object event, is its data readable, is it their bucket, is the key one a store accepts. A
bad event or key is the sender's fault and answered with a ``face.rejected`` reply (never
retried); another bucket's event is skipped. Keeping that in one place keeps the refusals of
enrollment and identification the same, codes included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cloudevents.http import CloudEvent

from facerank.cehttp import json_data
from facerank.errors import InvalidEventError, InvalidKeyError
from facerank.events import (
    FACE_REJECTED,
    OBJECT_CREATED,
    OBJECT_DELETED,
    ObjectChangeData,
    reply_event,
)
from facerank.storage.keys import check_key

Verdict = Literal["enrolled", "identified", "rejected", "removed", "skipped"]


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str
    reply: CloudEvent | None = None
    """The CloudEvent to answer with; None for an empty 202."""


def rejection(
    event: CloudEvent, where: dict[str, Any], code: str, message: str, *, source: str
) -> Outcome:
    """A ``face.rejected`` reply naming the error ``code``: final, never retried."""
    data = {**where, "reason": code, "message": message}
    return Outcome("rejected", code, reply_event(FACE_REJECTED, event, data, source=source))


def object_change(event: CloudEvent, bucket: str, *, source: str) -> ObjectChangeData | Outcome:
    """The change ``event`` announces in ``bucket``, or the outcome that ends its handling."""
    if event["type"] not in (OBJECT_CREATED, OBJECT_DELETED):
        return Outcome("skipped", f"not an object event: {event['type']}")
    try:
        data = ObjectChangeData.from_json(json_data(event))
    except (ValueError, InvalidEventError) as exc:
        return rejection(event, {}, "bad_event", str(exc), source=source)
    if data.bucket != bucket:
        return Outcome("skipped", f"bucket {data.bucket!r} is not {bucket!r}")
    try:
        check_key(data.key)
    except InvalidKeyError as exc:
        return rejection(event, {"bucket": data.bucket}, exc.code, str(exc), source=source)
    return data
