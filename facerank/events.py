"""facerank's CloudEvents: the types, how object events are built, and how they are sent.

One module so every producer and consumer agrees on the vocabulary (ARCHITECTURE.md lists
each type with its producer, consumers and data). Ids are derived from what the event is about,
never random: a notification delivered twice, or found again by reconcile, carries the same id,
so brokers and handlers can recognise redeliveries.
"""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cloudevents.http import CloudEvent

from facerank.cehttp import to_binary
from facerank.errors import FacerankError
from facerank.settings import Settings

log = logging.getLogger(__name__)

NAMESPACE = "dev.facerank"
OBJECT_CREATED = f"{NAMESPACE}.object.created.v1"
OBJECT_DELETED = f"{NAMESPACE}.object.deleted.v1"
FACE_ENROLLED = f"{NAMESPACE}.face.enrolled.v1"
FACE_REJECTED = f"{NAMESPACE}.face.rejected.v1"
FACE_REMOVED = f"{NAMESPACE}.face.removed.v1"
FACE_IDENTIFIED = f"{NAMESPACE}.face.identified.v1"
RETRAIN_REQUESTED = f"{NAMESPACE}.retrain.requested.v1"
RETRAIN_REFUSED = f"{NAMESPACE}.retrain.refused.v1"
RETRAIN_STARTED = f"{NAMESPACE}.retrain.started.v1"
RETRAIN_FAILED = f"{NAMESPACE}.retrain.failed.v1"
MODEL_TRAINED = f"{NAMESPACE}.model.trained.v1"
MODEL_PROMOTED = f"{NAMESPACE}.model.promoted.v1"
MODEL_REJECTED = f"{NAMESPACE}.model.rejected.v1"
GALLERY_REINDEXED = f"{NAMESPACE}.gallery.reindexed.v1"

JSON = "application/json"
BUCKET_ATTRIBUTE = "bucket"
"""CloudEvents extension naming the bucket of an object event (Trigger filters use it)."""

ObjectChange = Literal["created", "deleted"]


class DeliveryError(FacerankError):
    """The sink did not accept an event after the allowed attempts; the caller may retry."""

    code = "delivery_failed"
    retryable = True


@dataclass(frozen=True)
class ObjectChangeData:
    """``data`` of object.created / object.deleted: which object, in which version."""

    bucket: str
    key: str
    etag: str = ""
    """Content hash of the version created; empty for deletions (MinIO omits it)."""
    size: int | None = None
    sequencer: str = ""
    """The store's ordering token for the change (S3/MinIO ``sequencer``), when it gave one."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"bucket": self.bucket, "key": self.key}
        if self.etag:
            data["etag"] = self.etag
        if self.size is not None:
            data["size"] = self.size
        if self.sequencer:
            data["sequencer"] = self.sequencer
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObjectChangeData:
        """Parse event data, raising ``ValueError`` with the reason when it is malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("event data must be a JSON object")
        bucket, key = data.get("bucket"), data.get("key")
        if not isinstance(bucket, str) or not isinstance(key, str):
            raise ValueError("event data needs string fields 'bucket' and 'key'")
        size = data.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ValueError("'size' must be a non-negative integer")
        return cls(
            bucket=bucket,
            key=key,
            etag=str(data.get("etag") or ""),
            size=size,
            sequencer=str(data.get("sequencer") or ""),
        )


def bucket_source(settings: Settings, bucket: str) -> str:
    """The CloudEvents ``source`` of a bucket: a URI naming the store and the bucket."""
    if settings.store == "s3":
        return f"{settings.s3_endpoint.rstrip('/')}/{bucket}"
    return (settings.buckets_dir / bucket).resolve().as_uri()


def object_event(
    change: ObjectChange,
    source: str,
    data: ObjectChangeData,
    *,
    time_: datetime | None = None,
) -> CloudEvent:
    """An object.created / object.deleted event; its id names bucket, key, version and change.

    The version is the ETag for creations; deletions have none, so the store's sequencer is
    used, and failing that the empty string (a deletion of a key is then one event, whatever
    delivered it, which is what idempotent handling wants).

    The bucket also travels as the extension attribute ``bucket``: Knative Triggers filter on
    attributes only, and that is how the queries bucket's events reach the identify function
    alone.
    """
    version = data.etag if change == "created" else data.sequencer
    identity = "\0".join((change, data.bucket, data.key, version))
    attributes = {
        "type": OBJECT_CREATED if change == "created" else OBJECT_DELETED,
        "source": source,
        "id": hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:32],
        "subject": data.key,
        "time": (time_ or datetime.now(UTC)).isoformat(),
        "datacontenttype": JSON,
        BUCKET_ATTRIBUTE: data.bucket,
    }
    return CloudEvent(attributes, data.to_json())


def retrain_request(parameters: Mapping[str, Any], *, source: str) -> CloudEvent:
    """A request for a training run. A new request is a new intention, so its id is fresh;
    a redelivery of the same request keeps that id and so names the same run."""
    attributes = {
        "type": RETRAIN_REQUESTED,
        "source": source,
        "id": uuid.uuid4().hex,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": JSON,
    }
    return CloudEvent(attributes, dict(parameters))


def run_id_of(request: CloudEvent) -> str:
    """The training run a retrain request starts: a DNS label (it names Kubernetes objects),
    readable by its start time, unique by the request's id, the same for every redelivery."""
    stamp = datetime.fromisoformat(request["time"]) if request.get("time") else None
    prefix = f"{stamp:%Y%m%d-%H%M%S}-" if stamp is not None else "run-"
    return prefix + hashlib.sha256(str(request["id"]).encode()).hexdigest()[:6]


def run_event(type_: str, run_id: str, data: Mapping[str, Any], *, source: str) -> CloudEvent:
    """An event about training run ``run_id``: one id per (type, run), subject the run."""
    attributes = {
        "type": type_,
        "source": source,
        "id": hashlib.sha256(f"{type_}\0{run_id}".encode()).hexdigest()[:32],
        "subject": run_id,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": JSON,
    }
    return CloudEvent(attributes, {"run_id": run_id, **data})


def reply_event(
    type_: str, request: CloudEvent, data: Mapping[str, Any], *, source: str
) -> CloudEvent:
    """A handler's reply to ``request``: same subject, id derived from the request's id.

    Deriving the id keeps replies idempotent too: a redelivered request yields the same reply.
    """
    attributes = {
        "type": type_,
        "source": source,
        "id": hashlib.sha256(f"{type_}\0{request['id']}".encode()).hexdigest()[:32],
        "datacontenttype": JSON,
    }
    subject = request.get("subject")
    if subject:
        attributes["subject"] = subject
    return CloudEvent(attributes, dict(data))


def send_event(
    url: str,
    event: CloudEvent,
    *,
    attempts: int = 5,
    backoff: float = 0.2,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> None:
    """POST ``event`` in binary mode to ``url``, retrying with exponential backoff.

    Any 2xx is success. 4xx other than 408/429 is final (the sink refuses this event, and
    sending it again cannot help); everything else is retried. Raises :class:`DeliveryError`.
    """
    event_headers, body = to_binary(event)
    all_headers = {**event_headers, **(headers or {})}
    problem = ""
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=body, headers=all_headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                response.read()
                return
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        if attempt + 1 < attempts:
            time.sleep(backoff * 2**attempt)
    raise DeliveryError(f"event {event['id']} ({event['type']}) not accepted by {url}: {problem}")


def describe(event: CloudEvent) -> str:
    """A one-line summary for logs: type, subject and id, never the data."""
    return f"{event['type']} subject={event.get('subject', '-')!r} id={event['id']}"
