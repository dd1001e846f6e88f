"""Which events were notified, kept in the store so every replica and restart agrees.

Delivery is at-least-once: the broker redelivers an event whose delivery failed or timed out,
possibly to another replica, possibly while the first is still posting. A set in memory
forgets across processes, so the ledger is one small marker object per event id in the
gallery bucket (``notified/<hash of the event id>``; no event source watches that bucket),
claimed with a conditional write, as identify commits its results:

* ``If-None-Match: *`` creates the marker in state ``posting``: of any number of concurrent
  deliveries of one event exactly one wins the claim and posts;
* after the post it becomes ``posted``: every later delivery is answered "already posted";
* a failed post deletes the claim (``If-Match`` on the claim's ETag, never someone else's),
  so the broker's retry claims afresh;
* a delivery that finds another's ``posting`` claim answers a retryable error, so the broker
  comes back once that post has ended, unless the claim is older than :data:`LEASE`: its
  holder died mid-post, and the claim is taken over (``If-Match`` on the ETag read, so only one
  delivery takes it over).

A holder that died after posting but before writing ``posted`` makes its successor post again:
at least once, never lost. The markers hold no photo, face or identity. The cluster expires
them after a week (a lifecycle rule on the prefix, ``infra/base/minio/setup-job.yaml``), long
after the broker's last retry; ``facerank up`` keeps them with its other local state.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from facerank.errors import FacerankError, ObjectNotFoundError, PreconditionFailedError
from facerank.storage import ObjectStore

log = logging.getLogger(__name__)

PREFIX = "notified/"
LEASE = timedelta(seconds=12)
"""How long a ``posting`` claim holds off other deliveries: longer than one post may take
(``handler.TIMEOUT_S``, 10 s), shorter than the broker's retries span (5 retries from 0.5 s,
doubling: 15.5 s), so a retry of the delivery whose holder died still finds it expired."""
CLAIM_ATTEMPTS = 3
"""Claim rounds when the marker vanishes between a failed create and its read (a failed post
released it): then the next create usually wins."""

State = Literal["posting", "posted"]
Clock = Callable[[], datetime]


class NotificationInProgressError(FacerankError):
    """Another delivery of this event is posting it; the broker asks again later."""

    code = "notification_in_progress"
    retryable = True


class NotifyLedger:
    """Markers of notified events in one bucket of one store."""

    def __init__(
        self, store: ObjectStore, bucket: str, *, clock: Clock = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.clock = clock

    def claim(self, event_id: str) -> str | None:
        """Claim the right to post ``event_id``: the claim's ETag, or None when it was
        posted already. Raises :class:`NotificationInProgressError` while another delivery
        holds a live claim."""
        key = marker_key(event_id)
        for _ in range(CLAIM_ATTEMPTS):
            try:
                return self._write(key, event_id, "posting", if_none_match=True)
            except PreconditionFailedError:
                pass
            try:
                stored = self.store.get(self.bucket, key)
            except ObjectNotFoundError:
                continue  # released by a failed post meanwhile: claim it afresh
            if _state(stored.data) == "posted":
                return None
            if self.clock() - stored.info.last_modified < LEASE:
                raise NotificationInProgressError(f"event {event_id} is being posted")
            log.warning("event %s: taking over a claim older than %s", event_id, LEASE)
            try:
                return self._write(key, event_id, "posting", if_match=stored.info.etag)
            except PreconditionFailedError:
                raise NotificationInProgressError(f"event {event_id} was claimed again") from None
        raise NotificationInProgressError(f"event {event_id}: its claim kept changing")

    def posted(self, event_id: str) -> None:
        """Record the post: every later delivery of ``event_id`` is answered from this."""
        self._write(marker_key(event_id), event_id, "posted")

    def release(self, event_id: str, claim: str) -> None:
        """Give up a claim after a failed post, unless someone took it over meanwhile."""
        try:
            self.store.delete(self.bucket, marker_key(event_id), if_match=claim)
        except PreconditionFailedError:
            log.info("event %s: the claim was taken over; leaving it", event_id)

    def _write(
        self,
        key: str,
        event_id: str,
        state: State,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        body = json.dumps({"event_id": event_id, "state": state}).encode()
        info = self.store.put(
            self.bucket,
            key,
            body,
            content_type="application/json",
            if_match=if_match,
            if_none_match=if_none_match,
        )
        return info.etag


def marker_key(event_id: str) -> str:
    """The marker's key: a hash of the id, since event ids are the sender's strings (any
    non-empty string, CloudEvents says) and no ``/``, ``..``, odd byte or length may shape a
    key."""
    return PREFIX + hashlib.sha256(event_id.encode()).hexdigest()


def _state(data: bytes) -> State | None:
    try:
        state = json.loads(data).get("state")
    except (ValueError, AttributeError):
        return None
    return state if state in ("posting", "posted") else None
