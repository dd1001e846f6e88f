"""Enrollment logic: an object event in, the gallery brought in line with the object, a verdict out.

Handlers are level-triggered: an event only says *which* photo to look at; what to do is
decided from the store's current state. That makes every delivery idempotent and ordering
harmless:

* a duplicate finds the gallery already matching the object and changes nothing;
* a stale creation (the object has another ETag now, or is gone) is skipped: the event of the
  newer state does the work, or reconcile does;
* a stale deletion (the key exists again) is skipped for the same reason.

Every enrollment embeds with each version the model pointer serves: the active one, and the
one being prepared during a model switch. The pointer is read again after the commit, so a
face enrolled while a switch began still gets the new version (see
:mod:`facerank.registry.switch`): no face is lost by a switch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
from cloudevents.http import CloudEvent

from facerank.embedding import Embedder
from facerank.errors import (
    InvalidIdentityError,
    InvalidImageError,
    NoFaceError,
    ObjectNotFoundError,
)
from facerank.events import (
    FACE_ENROLLED,
    FACE_REMOVED,
    OBJECT_CREATED,
    ObjectChangeData,
    describe,
    reply_event,
)
from facerank.faces.align import GALLERY_CROP_256
from facerank.gallery import EnrolledFace, Gallery, SourceRecord, face_id, identity_from_key
from facerank.pipeline import (
    FacePipeline,
    NoFaceExplainer,
    alignment_from_settings,
    detector_from_settings,
    image_limits,
)
from facerank.registry import ActivePointer, ModelRegistry, ServingModels
from facerank.reindex import add_version, embed_served
from facerank.settings import Settings
from facerank.storage import ObjectStore, StoredObject
from functions.objects import Outcome, object_change, rejection

log = logging.getLogger(__name__)

REPLY_SOURCE = "facerank/enroll"
COMPLETION_ATTEMPTS = 5
"""Rounds of reading a record and adding one missing model version to it (a switch serves two
versions at most) before leaving it to re-indexing."""

REJECTIONS = (InvalidImageError, NoFaceError)
"""Errors that are the photo's fault: answered with a rejection, never retried."""


class EnrollHandler:
    """Applies object.created / object.deleted events of the faces bucket to the gallery."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        gallery: Gallery,
        models: ServingModels,
    ) -> None:
        self.settings = settings
        self.store = store
        self.gallery = gallery
        self.models = models
        self.detector = detector_from_settings(settings)
        self.align_mode, self.locator = alignment_from_settings(settings)
        self._no_face = NoFaceExplainer(settings)

    def handle(self, event: CloudEvent) -> Outcome:
        """Decide and apply; retryable store failures propagate as :class:`FacerankError`."""
        data = object_change(event, self.settings.faces_bucket, source=REPLY_SOURCE)
        if isinstance(data, Outcome):
            return data
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
        pointer, embedders = self.models.current()
        existing = self.gallery.record(data.bucket, data.key)
        if existing and existing.etag == etag:
            self._complete_versions(data)
            return self._enrolled(event, existing, pointer, "already enrolled")
        pipeline = FacePipeline(
            self.detector,
            embedders[pointer.active.version],
            align_mode=self.align_mode,
            limits=image_limits(self.settings),
            locator=self.locator,
        )
        try:
            record, crops, embeddings = self._analyze(pipeline, identity, stored, embedders)
        except REJECTIONS as exc:
            # The photo at this key is no longer usable: whatever an older version of it
            # enrolled must go too, or the gallery would describe a photo that is gone.
            self.gallery.remove_source(data.bucket, data.key)
            return self._reject(event, {**where, "etag": etag}, exc.code, str(exc))
        if self._changed_since(data, etag):
            return Outcome("skipped", "stale: the object changed during enrollment")
        committed = self.gallery.enroll(record, crops, embeddings)
        self._complete_versions(data)
        return self._enrolled(event, committed, pointer, f"{len(committed.faces)} face(s)")

    def _complete_versions(self, data: ObjectChangeData) -> None:
        """Add every served version the photo's record lacks (a switch began meanwhile).

        Read-check-add until the record holds them all, or is gone: its conditional write
        loses to a concurrent re-enrollment, which then does this itself. A record that keeps
        failing (a crop lost) is left to the re-indexer's passes and reconcile.
        """
        _, embedders = self.models.current()
        for _ in range(COMPLETION_ATTEMPTS):
            stored = self.gallery.stored_record(data.bucket, data.key)
            if stored is None or stored.record is None:
                return
            missing = [v for v in embedders if v not in stored.record.model_versions]
            if not missing:
                return
            add_version(self.gallery, stored, embedders[missing[0]])
        log.warning("%s/%s still lacks a served model version", data.bucket, data.key)

    def _analyze(
        self,
        pipeline: FacePipeline,
        identity: str,
        stored: StoredObject,
        embedders: Mapping[str, Embedder],
    ) -> tuple[SourceRecord, list[np.ndarray], dict[str, np.ndarray]]:
        """Faces of the photo: their crops, and embeddings by every served version (the
        active one from chips aligned on the photo, others from the crops, as re-embedding
        does)."""
        info = stored.info
        pixels = pipeline.decode(stored.data).pixels
        found = pipeline.analyze(pixels)
        if not found.faces:
            raise self._no_face.explain(pixels)
        chosen = found.chosen(self.settings.enroll_faces)
        crops = [pipeline.align(pixels, f, GALLERY_CROP_256).chip for f in chosen]
        embeddings = embed_served(pipeline, chosen, crops, embedders)
        record = SourceRecord(
            identity=identity,
            bucket=info.bucket,
            key=info.key,
            etag=info.etag,
            faces_seen=len(found.faces),
            enrolled_at=datetime.now(UTC),
            faces=tuple(
                EnrolledFace(
                    face_id=face_id(info.bucket, info.key, info.etag, i),
                    box=f.detection.box,
                    confidence=f.detection.confidence,
                    alignment=f.aligned.method,
                    detector=f.detection.detector,
                )
                for i, f in enumerate(chosen)
            ),
        )
        return record, crops, embeddings

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

    def _enrolled(
        self, event: CloudEvent, record: SourceRecord, pointer: ActivePointer, reason: str
    ) -> Outcome:
        data = {
            "identity": record.identity,
            "bucket": record.bucket,
            "key": record.key,
            "etag": record.etag,
            "model_version": pointer.active.version,
            "model_versions": list(record.model_versions),
            "faces_seen": record.faces_seen,
            "faces": [f.to_json() for f in record.faces],
        }
        return Outcome(
            "enrolled", reason, reply_event(FACE_ENROLLED, event, data, source=REPLY_SOURCE)
        )

    def _reject(self, event: CloudEvent, where: dict[str, Any], code: str, message: str) -> Outcome:
        return rejection(event, where, code, message, source=REPLY_SOURCE)


def build_handler(settings: Settings, store: ObjectStore) -> EnrollHandler:
    """The handler ``settings`` describe: their gallery, following their models bucket."""
    gallery = Gallery(store, settings.gallery_bucket)
    models = ServingModels(ModelRegistry(store, settings.models_bucket), settings)
    return EnrollHandler(settings, store, gallery, models)
