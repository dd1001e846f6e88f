"""Identification logic: an object event of the queries bucket in, a result beside the photo out.

Level-triggered like enrollment: the event names a photo, the store's state decides.

* A photo whose version already has a result is answered from that result: a redelivery asks
  the predictor nothing and writes nothing, and its reply (id derived from the request's) is
  the same event again.
* Faces are ranked by the served predictor (KServe V1, its own URL and token), never by a
  model loaded here: the answer always comes from the model version and gallery it serves.
* A photo that cannot be identified gets the refusals enrollment gives (``not_an_image``,
  ``no_face``, ...), as a ``face.rejected`` reply and as the ``error`` of its result.
* Faces nobody matched are kept and grouped (:mod:`facerank.unknown`): the same detector
  runs here to cut their crops, and the served models embed them. Their ids travel in the
  result (``unknown_id``), so a person can be told which group a face landed in.
* Deleting a photo deletes its result and its unknown faces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from cloudevents.http import CloudEvent

from facerank.embedding import Embedder
from facerank.errors import (
    InvalidImageError,
    NoFaceError,
    ObjectNotFoundError,
)
from facerank.events import (
    FACE_IDENTIFIED,
    OBJECT_CREATED,
    ObjectChangeData,
    describe,
    reply_event,
)
from facerank.faces.align import GALLERY_CROP_256
from facerank.gallery import face_id
from facerank.imaging import decode_image
from facerank.pipeline import (
    Face,
    FacePipeline,
    NoFaceExplainer,
    alignment_from_settings,
    detector_from_settings,
    image_limits,
)
from facerank.predictor import PredictorError, predict
from facerank.queries import (
    IdentifiedFace,
    QueryResult,
    QueryResults,
    is_result_key,
    result_key,
)
from facerank.registry import ModelRegistry, ServingModels
from facerank.reindex import embed_served
from facerank.settings import Settings
from facerank.storage import ObjectStore
from facerank.unknown import NewFace, UnknownFace, UnknownFaces
from functions.objects import Outcome, object_change, rejection

log = logging.getLogger(__name__)

REPLY_SOURCE = "facerank/identify"

Predict = Callable[[bytes], dict[str, Any]]
"""Photo bytes in, the predictor's V1 prediction for it out."""


class IdentifyHandler:
    """Applies object.created / object.deleted events of the queries bucket."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        predictor: Predict,
        models: ServingModels,
        unknown: UnknownFaces,
    ) -> None:
        """``models`` embed the faces nobody matched (crops and vectors kept in ``unknown``);
        ranking is the predictor's alone."""
        self.settings = settings
        self.store = store
        self.bucket = settings.queries_bucket
        self.results = QueryResults(store, self.bucket)
        self.predict = predictor
        self.models = models
        self.unknown = unknown
        self.detector = detector_from_settings(settings)
        self.align_mode, self.locator = alignment_from_settings(settings)
        self._no_face = NoFaceExplainer(settings)
        self._served_threshold = 0.0

    def handle(self, event: CloudEvent) -> Outcome:
        """Decide and apply; retryable failures (store, predictor) propagate."""
        data = object_change(event, self.bucket, source=REPLY_SOURCE)
        if isinstance(data, Outcome):
            return data
        if is_result_key(data.key):
            return Outcome("skipped", "a result, not a photo")
        outcome = (
            self._created(event, data) if event["type"] == OBJECT_CREATED else self._deleted(data)
        )
        log.info("%s: %s (%s)", describe(event), outcome.verdict, outcome.reason)
        return outcome

    # --- object.created ---------------------------------------------------------------------

    def _created(self, event: CloudEvent, data: ObjectChangeData) -> Outcome:
        try:
            stored = self.store.get(data.bucket, data.key)
        except ObjectNotFoundError:
            return Outcome("skipped", "object no longer exists")
        etag = stored.info.etag
        if data.etag and data.etag != etag:
            return Outcome("skipped", f"stale: the object is now version {etag}")
        previous = self.results.read(data.key)
        if previous is not None and previous.result is not None and previous.result.etag == etag:
            return self._answer(event, previous.result, "already identified")
        try:
            result = self._identify(data.key, etag, stored.data)
        except (InvalidImageError, NoFaceError, PredictorError) as exc:
            if exc.retryable:
                raise
            result = QueryResult(data.bucket, data.key, etag, error=exc.to_json())
        if self._changed_since(data.key, etag):
            return Outcome("skipped", "stale: the object changed during identification")
        committed = self.results.commit(result)
        if committed is None:
            return Outcome("skipped", "stale: a result of a newer version is there")
        return self._answer(event, committed, f"{len(committed.faces)} face(s)")

    def _identify(self, key: str, etag: str, photo: bytes) -> QueryResult:
        """Decode here (so refusals read as enrollment's), rank through the predictor."""
        pixels = decode_image(photo, **image_limits(self.settings)).pixels
        prediction = self.predict(photo)
        faces = tuple(IdentifiedFace.from_json(face) for face in prediction.get("faces", ()))
        if not faces:
            raise self._no_face.explain(pixels)
        kept = self._keep_unknown(key, etag, pixels, faces, prediction.get("threshold"))
        faces = tuple(replace(f, unknown_id=kept.get(i)) for i, f in enumerate(faces))
        return QueryResult(self.bucket, key, etag, str(prediction.get("model_version", "")), faces)

    def _keep_unknown(
        self,
        key: str,
        etag: str,
        pixels: np.ndarray,
        faces: Sequence[IdentifiedFace],
        served_threshold: float | None,
    ) -> dict[int, str]:
        """Keep the faces nobody matched (crop, embedding per served version, source) and
        group them; ``face index -> unknown face id``.

        The predictor returns boxes, not pixels or vectors, so the same detector runs here
        and each unknown face is paired with the local detection it overlaps most.
        """
        wanted = [i for i, face in enumerate(faces) if face.identity is None]
        if not wanted:
            return {}
        pointer, embedders = self.models.current()
        active = pointer.active.version
        pipeline = FacePipeline(
            self.detector,
            embedders[active],
            align_mode=self.align_mode,
            limits=image_limits(self.settings),
            locator=self.locator,
        )
        local = pipeline.analyze(pixels).faces
        new = []
        for index in wanted:
            paired = best_overlap(faces[index].box, local)
            if paired is None:
                log.warning("%s: no local detection for unknown face %d", key, index)
                continue
            crop = pipeline.align(pixels, paired, GALLERY_CROP_256).chip
            vectors = {
                v: m[0] for v, m in embed_served(pipeline, [paired], [crop], embedders).items()
            }
            face = UnknownFace(
                face_id(self.bucket, key, etag, index),
                self.bucket,
                key,
                etag,
                faces[index].box,
                model_versions=tuple(vectors),
            )
            new.append((index, NewFace(face, crop, vectors)))
        threshold = self._group_threshold(embedders[active], served_threshold)
        self.unknown.add(
            [n for _, n in new], embedders=embedders, active=active, threshold=threshold
        )
        return {index: n.face.face_id for index, n in new}

    def _group_threshold(self, embedder: Embedder, served: object) -> float:
        """Unknown faces join a group at the threshold the predictor decided ``match`` at:
        calibrated for the gallery's size (see :mod:`facerank.openset`), because a new face is
        compared with many groups at once just as a query is with many identities (at the pair
        threshold, AT&T's strangers fell into groups of pairwise precision 0.05). Without one
        (a deletion, an older predictor): the last one served, else the pair threshold."""
        if isinstance(served, int | float) and 0.0 < served <= 2.0:
            self._served_threshold = float(served)
        return self._served_threshold or self.settings.match_threshold or embedder.match_threshold

    def _changed_since(self, key: str, etag: str) -> bool:
        try:
            return self.store.stat(self.bucket, key).etag != etag
        except ObjectNotFoundError:
            return True

    # --- object.deleted ---------------------------------------------------------------------

    def _deleted(self, data: ObjectChangeData) -> Outcome:
        if self.store.exists(data.bucket, data.key):
            return Outcome("skipped", "stale: the object exists again")
        pointer, embedders = self.models.current()
        threshold = self._group_threshold(embedders[pointer.active.version], None)
        forgotten = self.unknown.remove_source(data.bucket, data.key, threshold=threshold)
        if not self.results.delete(data.key) and not forgotten:
            return Outcome("skipped", "no result to remove")
        return Outcome("removed", f"result and {len(forgotten)} unknown face(s) deleted")

    # --- replies ----------------------------------------------------------------------------

    def _answer(self, event: CloudEvent, result: QueryResult, reason: str) -> Outcome:
        """``face.identified`` for a result, ``face.rejected`` for a refusal's result."""
        where = {"bucket": result.bucket, "key": result.key, "etag": result.etag}
        if result.error is not None:
            return self._refuse(
                event, where, result.error.get("code", "error"), result.error.get("message", "")
            )
        data = identified_data(result)
        return Outcome(
            "identified", reason, reply_event(FACE_IDENTIFIED, event, data, source=REPLY_SOURCE)
        )

    def _refuse(self, event: CloudEvent, where: dict[str, Any], code: str, message: str) -> Outcome:
        return rejection(event, where, code, message, source=REPLY_SOURCE)


def identified_data(result: QueryResult) -> dict[str, Any]:
    """``data`` of ``face.identified.v1``: the result, which holds no pixels and no vectors."""
    return result.to_json() | {"result_key": result_key(result.key)}


def build_handler(settings: Settings, store: ObjectStore) -> IdentifyHandler:
    """The handler ``settings`` describe, ranking through the predictor they name."""
    base_url, token, top_k = (
        settings.predictor_base_url,
        settings.predictor_token,
        settings.identify_top_k,
    )

    def ranked(photo: bytes) -> dict[str, Any]:
        return predict(base_url, photo, top_k, api_token=token)

    models = ServingModels(ModelRegistry(store, settings.models_bucket), settings)
    unknown = UnknownFaces(store, settings.gallery_bucket)
    return IdentifyHandler(settings, store, ranked, models, unknown)


def best_overlap(box: tuple[int, int, int, int], faces: Sequence[Face]) -> Face | None:
    """The face whose detection box overlaps ``box`` most (IoU at least a half), or None."""
    best, best_iou = None, 0.5
    for face in faces:
        iou = box_iou(box, face.detection.box)
        if iou >= best_iou:
            best, best_iou = face, iou
    return best


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0, width) * max(0, height)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
