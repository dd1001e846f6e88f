"""Enrollment logic: an object event in, the gallery brought in line with the object, a verdict out.

Handlers are level-triggered: an event only says *which* photo to look at; what to do is
decided from the store's current state. That makes every delivery idempotent and ordering
harmless:

* a duplicate finds the gallery already matching the object and changes nothing;
* a stale creation (the object has another ETag now, or is gone) is skipped: the event of the
  newer state does the work, or reconcile does;
* a stale deletion (the key exists again) is skipped for the same reason.

The model version is read from the embedder on every enrollment, so a record always names the
version its embeddings were made with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from cloudevents.http import CloudEvent

from facerank.cehttp import json_data
from facerank.errors import (
    FaceTooSmallError,
    InvalidEventError,
    InvalidIdentityError,
    InvalidImageError,
    InvalidKeyError,
    NoFaceError,
    ObjectNotFoundError,
)
from facerank.events import (
    FACE_ENROLLED,
    FACE_REJECTED,
    FACE_REMOVED,
    OBJECT_CREATED,
    OBJECT_DELETED,
    ObjectChangeData,
    describe,
    reply_event,
)
from facerank.faces import HaarFaceDetector
from facerank.faces.align import GALLERY_CROP_256, align_face
from facerank.gallery import EnrolledFace, Gallery, SourceRecord, face_id, identity_from_key
from facerank.pipeline import Face, FacePipeline
from facerank.settings import EnrollFaces, Settings
from facerank.storage import ObjectStore, StoredObject
from facerank.storage.keys import check_key

log = logging.getLogger(__name__)

REPLY_SOURCE = "facerank/enroll"
SMALLEST_DETECTABLE = 24
"""Haar's window: faces below this cannot be seen at all, so none can be "too small"."""

Verdict = Literal["enrolled", "rejected", "removed", "skipped"]

REJECTIONS = (InvalidImageError, NoFaceError)
"""Errors that are the photo's fault: answered with a rejection, never retried."""


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str
    reply: CloudEvent | None = None
    """The CloudEvent to answer with; None for an empty 202."""


class EnrollHandler:
    """Applies object.created / object.deleted events of the faces bucket to the gallery."""

    def __init__(
        self, settings: Settings, store: ObjectStore, gallery: Gallery, pipeline: FacePipeline
    ) -> None:
        self.settings = settings
        self.store = store
        self.gallery = gallery
        self.pipeline = pipeline
        self._small_face_probe = HaarFaceDetector(
            min_face_size=SMALLEST_DETECTABLE,
            max_faces=1,
            min_confidence=settings.min_face_confidence,
            find_eyes=False,
        )

    def handle(self, event: CloudEvent) -> Outcome:
        """Decide and apply; retryable store failures propagate as :class:`FacerankError`."""
        if event["type"] not in (OBJECT_CREATED, OBJECT_DELETED):
            return Outcome("skipped", f"not an object event: {event['type']}")
        try:
            data = ObjectChangeData.from_json(json_data(event))
        except (ValueError, InvalidEventError) as exc:
            return self._reject(event, {}, "bad_event", str(exc))
        if data.bucket != self.settings.faces_bucket:
            return Outcome("skipped", f"bucket {data.bucket!r} is not the faces bucket")
        try:
            check_key(data.key)
        except InvalidKeyError as exc:
            return self._reject(event, {"bucket": data.bucket}, exc.code, str(exc))
        outcome = (
            self._created(event, data)
            if event["type"] == OBJECT_CREATED
            else self._deleted(event, data)
        )
        log.info("%s: %s (%s)", describe(event), outcome.verdict, outcome.reason)
        return outcome

    # --- object.created ---------------------------------------------------------------------

    def _created(self, event: CloudEvent, data: ObjectChangeData) -> Outcome:
        where = {"bucket": data.bucket, "key": data.key}
        try:
            identity = identity_from_key(data.key)
            stored = self.store.get(data.bucket, data.key)
        except InvalidIdentityError as exc:
            return self._reject(event, {**where, "etag": data.etag}, exc.code, str(exc))
        except ObjectNotFoundError:
            return Outcome("skipped", "object no longer exists")
        etag = stored.info.etag
        if data.etag and data.etag != etag:
            return Outcome("skipped", f"stale: the object is now version {etag}")
        existing = self.gallery.record(data.bucket, data.key)
        version = self.pipeline.model_version
        if existing and existing.etag == etag and version in existing.model_versions:
            return self._enrolled(event, existing, "already enrolled")
        try:
            record, crops, vectors = self._analyze(identity, stored)
        except REJECTIONS as exc:
            # The photo at this key is no longer usable: whatever an older version of it
            # enrolled must go too, or the gallery would describe a photo that is gone.
            self.gallery.remove_source(data.bucket, data.key)
            return self._reject(event, {**where, "etag": etag}, exc.code, str(exc))
        if self._changed_since(data, etag):
            return Outcome("skipped", "stale: the object changed during enrollment")
        committed = self.gallery.enroll(record, crops, vectors, version)
        return self._enrolled(event, committed, f"{len(committed.faces)} face(s)")

    def _analyze(
        self, identity: str, stored: StoredObject
    ) -> tuple[SourceRecord, list[np.ndarray], np.ndarray]:
        info = stored.info
        pixels = self.pipeline.decode(stored.data).pixels
        faces = self.pipeline.analyze(pixels).faces
        if not faces:
            raise self._why_no_face(pixels)
        chosen = select_faces(faces, self.settings.enroll_faces)
        vectors = self.pipeline.embed(chosen)
        crops = [
            align_face(pixels, f.detection, GALLERY_CROP_256, self.pipeline.align_mode).chip
            for f in chosen
        ]
        record = SourceRecord(
            identity=identity,
            bucket=info.bucket,
            key=info.key,
            etag=info.etag,
            faces_seen=len(faces),
            enrolled_at=datetime.now(UTC),
            faces=tuple(
                EnrolledFace(
                    face_id=face_id(info.bucket, info.key, info.etag, i),
                    box=f.detection.box,
                    confidence=f.detection.confidence,
                    alignment=f.aligned.method,
                )
                for i, f in enumerate(chosen)
            ),
        )
        return record, crops, vectors

    def _why_no_face(self, pixels: np.ndarray) -> NoFaceError:
        """Tell "no face at all" from "faces, but all below the minimum size"."""
        height, width = pixels.shape[:2]
        small = self._small_face_probe.detect(pixels)
        if small:
            side = small[0].box[2]
            return FaceTooSmallError(
                f"the largest face is {side}px wide, below the minimum of "
                f"{self.settings.min_face_size}px"
            )
        return NoFaceError(f"no face found in the {width}x{height} image")

    def _changed_since(self, data: ObjectChangeData, etag: str) -> bool:
        """Re-check the object just before committing, to narrow the window for races."""
        try:
            return self.store.stat(data.bucket, data.key).etag != etag
        except ObjectNotFoundError:
            return True

    # --- object.deleted ---------------------------------------------------------------------

    def _deleted(self, event: CloudEvent, data: ObjectChangeData) -> Outcome:
        if self.store.exists(data.bucket, data.key):
            return Outcome("skipped", "stale: the object exists again")
        removed = self.gallery.remove_source(data.bucket, data.key)
        if removed is None:
            return Outcome("skipped", "nothing was enrolled from this object")
        reply = reply_event(
            FACE_REMOVED,
            event,
            {
                "identity": removed.identity,
                "bucket": removed.bucket,
                "key": removed.key,
                "face_ids": [f.face_id for f in removed.faces],
            },
            source=REPLY_SOURCE,
        )
        return Outcome("removed", f"{len(removed.faces)} face(s)", reply)

    # --- replies ----------------------------------------------------------------------------

    def _enrolled(self, event: CloudEvent, record: SourceRecord, reason: str) -> Outcome:
        data = {
            "identity": record.identity,
            "bucket": record.bucket,
            "key": record.key,
            "etag": record.etag,
            "model_version": self.pipeline.model_version,
            "faces_seen": record.faces_seen,
            "faces": [f.to_json() for f in record.faces],
        }
        return Outcome(
            "enrolled", reason, reply_event(FACE_ENROLLED, event, data, source=REPLY_SOURCE)
        )

    def _reject(self, event: CloudEvent, where: dict[str, Any], code: str, message: str) -> Outcome:
        data = {**where, "reason": code, "message": message}
        return Outcome(
            "rejected", code, reply_event(FACE_REJECTED, event, data, source=REPLY_SOURCE)
        )


def select_faces(faces: list[Face], policy: EnrollFaces) -> list[Face]:
    """The faces to enroll: the largest (detections come largest first) or all of them."""
    return faces if policy == "all" else faces[:1]
