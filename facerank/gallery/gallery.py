"""The gallery: enrolled faces in the object store, the source of truth for search.

Layout in the gallery bucket::

    identities/<identity>/<source_id>.json    one commit record per source photo
    faces/<face_id>/crop.png                   the aligned crop (GALLERY_CROP_256 layout)
    faces/<face_id>/<model_version>.f32        its embedding by that model, float32 LE
    index/<model_version>/...                  every face of that version in a few large
                                               objects, for readers (:mod:`.index`)

Why this shape:

* Crops are the truth and embeddings are derived, stored per model version beside the crop,
  so a new model re-embeds from crops and two versions never share a file.
* Every write goes to an object of its own: N concurrent enrollments of different photos touch
  disjoint keys, so none can lose another's update without any locking.
* A record is written last and deleted first. Readers believe only faces a record lists, so
  a crash mid-enrollment or mid-removal leaves the old state or the new one as far as any
  query can tell; unreferenced face objects are collected later.
* Records live under their identity, so listing one identity is one prefix listing.
* The index is derived from the records and embeddings and always changed after them (both
  on enrollment and on removal). A crash in between leaves the records right and the index
  behind; :meth:`Gallery.repair_index` (reconcile, ``facerank gallery reindex``) moves the
  index to what the records say, never the other way round.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import cv2
import numpy as np

from facerank.embedding.base import validate_model_version
from facerank.errors import InvalidIdentityError, ObjectNotFoundError, PreconditionFailedError
from facerank.faces.align import GALLERY_CROP_256
from facerank.gallery.identity import identity_from_key, normalise_identity
from facerank.gallery.index import INDEX, SEGMENT_ROWS, EmbeddingIndex, IndexChange
from facerank.gallery.records import SourceRecord, source_id
from facerank.gallery.segments import Segment
from facerank.gallery.together import run_together
from facerank.storage import ObjectStore

log = logging.getLogger(__name__)

RECORDS = "identities/"
FACES = "faces/"
CROP_NAME = "crop.png"
ORPHAN_GRACE = timedelta(minutes=10)
"""Face objects younger than this are never collected: their record may be on its way."""


@dataclass(frozen=True)
class StoredRecord:
    """A record as read, with the ETag of the bytes read, for callers that track changes."""

    key: str
    etag: str
    record: SourceRecord | None
    """None when the object is not a readable record (logged once per read)."""


@dataclass(frozen=True)
class GalleryMatrix:
    """Every enrolled face of one model version, ready for one matrix product."""

    model_version: str
    face_ids: list[str]
    identities: list[str]
    vectors: np.ndarray
    """``(len(face_ids), dim)`` float32, unit rows."""


class Gallery:
    """Enrolled faces of one gallery bucket."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket
        self._indexes: dict[str, EmbeddingIndex] = {}

    def index(self, model_version: str) -> EmbeddingIndex:
        """The index of ``model_version``'s embeddings (one object per version and gallery,
        so its cache of segment members is shared by every caller)."""
        validate_model_version(model_version)
        return self._indexes.setdefault(
            model_version, EmbeddingIndex(self.store, self.bucket, model_version)
        )

    def ensure(self) -> None:
        self.store.ensure_bucket(self.bucket)

    # --- writing ----------------------------------------------------------------------------

    def enroll(
        self,
        record: SourceRecord,
        crops: Sequence[np.ndarray],
        embeddings: Mapping[str, np.ndarray],
    ) -> SourceRecord:
        """Store ``record``'s faces (crops + embeddings by model version), then commit it.

        Replaces what an earlier version of the same photo enrolled: the new record takes its
        place in one write, then faces only the old record listed are removed. Idempotent: the
        same record again rewrites identical objects.
        """
        if not embeddings:
            raise ValueError("at least one model version's embeddings are needed")
        for version, vectors in embeddings.items():
            validate_model_version(version)
            if not len(crops) == len(vectors) == len(record.faces):
                raise ValueError("record, crops and vectors must describe the same faces")
        previous = self.record(record.bucket, record.key)
        writes: list[Callable[[], object]] = []
        for i, (face, crop) in enumerate(zip(record.faces, crops, strict=True)):
            writes.append(partial(self._put_crop, face.face_id, crop))
            writes += [
                partial(self._put_embedding, face.face_id, version, vectors[i])
                for version, vectors in embeddings.items()
            ]
        run_together(writes)  # all of them before the record that lists them
        committed = record
        for version in embeddings:
            committed = committed.with_model_version(version)
        self._put_record(committed)
        kept = {f.face_id for f in committed.faces}
        replaced = [] if previous is None else [f.face_id for f in previous.faces]
        replaced = [f for f in replaced if f not in kept]
        for version, vectors in embeddings.items():
            self.index(version).apply(_segment(committed, vectors), replaced)
        if previous is not None:
            for version in set(previous.model_versions) - embeddings.keys():
                self.index(version).apply(removed=replaced)
            self._delete_faces(replaced)
        return committed

    def add_model_version(
        self, stored: StoredRecord, model_version: str, vectors: np.ndarray
    ) -> SourceRecord:
        """Add ``model_version``'s embeddings of a record's faces, as read at ``stored.etag``.

        The record is rewritten only if it is still the one read (a conditional put), so a
        re-embedding never reverts a concurrent re-enrollment or resurrects a removal: it
        raises PreconditionFailedError and the caller reads again. Idempotent.
        """
        updated = self._commit_version(stored, model_version, vectors)
        self.index(model_version).apply(_segment(updated, vectors))
        return updated

    def add_model_versions(
        self, model_version: str, items: Sequence[tuple[StoredRecord, np.ndarray]]
    ) -> int:
        """:meth:`add_model_version` for many records, with one index change for them all
        (re-embedding's batches). Records that changed or vanished since they were read are
        skipped, for the caller's next pass; how many gained the version."""
        committed: list[tuple[SourceRecord, np.ndarray]] = []
        for stored, vectors in items:
            try:
                committed.append((self._commit_version(stored, model_version, vectors), vectors))
            except (PreconditionFailedError, ObjectNotFoundError):
                continue
        faces = [(f.face_id, r.identity) for r, _ in committed for f in r.faces]
        if faces:
            vectors = np.concatenate([v for _, v in committed if len(v)])
            segment = Segment.build([f for f, _ in faces], [i for _, i in faces], vectors)
            self.index(model_version).apply(segment)
        return len(committed)

    def _commit_version(
        self, stored: StoredRecord, model_version: str, vectors: np.ndarray
    ) -> SourceRecord:
        """Embeddings, then the record naming the version, written over ``stored.etag``."""
        validate_model_version(model_version)
        record = stored.record
        if record is None or len(vectors) != len(record.faces):
            raise ValueError("one vector per face of a readable record is needed")
        for face, vector in zip(record.faces, vectors, strict=True):
            self._put_embedding(face.face_id, model_version, vector)
        updated = record.with_model_version(model_version)
        self._put_record(updated, if_match=stored.etag)
        return updated

    def remove_source(self, bucket: str, key: str) -> SourceRecord | None:
        """Un-enroll everything one source photo contributed; the removed record, if any."""
        record = self.record(bucket, key)
        if record is not None:
            self._remove([record])
        return record

    def remove_identity(self, identity: str) -> list[SourceRecord]:
        """Un-enroll every face of ``identity``; the removed records."""
        records = list(self.records(normalise_identity(identity)))
        self._remove(records)
        return records

    def repair_indexes(self, versions: Iterable[str] | None = None) -> dict[str, IndexChange]:
        """Bring each version's index in line with the records (every version records or
        indexes name, by default): add the faces records list but the index lacks (a crash
        after a record write), drop the faces no record lists. From an empty index this is a
        full rebuild, in batches of whole segments. Reads every record once."""
        records = list(self.records())
        if versions is None:
            versions = {v for r in records for v in r.model_versions} | set(self.index_versions())
        return {v: self._repair_index(v, records) for v in sorted(versions)}

    def _repair_index(self, model_version: str, records: Sequence[SourceRecord]) -> IndexChange:
        index = self.index(model_version)
        wanted = {
            f.face_id: r.identity
            for r in records
            if model_version in r.model_versions
            for f in r.faces
        }
        present = index.face_ids()
        extra = present - wanted.keys()
        missing = sorted(wanted.keys() - present)
        removed = index.apply(removed=extra).removed if extra else 0
        added = 0
        for start in range(0, len(missing), SEGMENT_ROWS):
            batch = missing[start : start + SEGMENT_ROWS]
            try:
                vectors = np.stack([self.embedding(f, model_version) for f in batch])
            except ObjectNotFoundError:
                continue  # a removal ran meanwhile; the next repair sees the records anew
            segment = Segment.build(batch, [wanted[f] for f in batch], vectors)
            added += index.apply(segment).added
        if added or removed:
            log.info(
                "index %s repaired: %d face(s) added, %d removed", model_version, added, removed
            )
        return IndexChange(added, removed)

    def index_versions(self) -> list[str]:
        """Model versions that have an index in this gallery."""
        versions = {
            info.key[len(INDEX) :].split("/", 1)[0] for info in self.store.list(self.bucket, INDEX)
        }
        return sorted(versions)

    def collect_orphans(self, *, now: datetime | None = None) -> int:
        """Delete face objects no record lists and index segments no manifest lists (left by
        crashes), older than the grace period."""
        referenced = {f.face_id for r in self.records() for f in r.faces}
        cutoff = (now or datetime.now(UTC)) - ORPHAN_GRACE
        removed = sum(self.index(v).collect_orphans(cutoff) for v in self.index_versions())
        for info in self.store.list(self.bucket, FACES):
            face = info.key[len(FACES) :].split("/", 1)[0]
            if face not in referenced and info.last_modified < cutoff:
                self.store.delete(self.bucket, info.key)
                removed += 1
        return removed

    # --- reading ----------------------------------------------------------------------------

    def record(self, bucket: str, key: str) -> SourceRecord | None:
        """The record of one source photo, or None (also for keys naming no valid identity)."""
        stored = self.stored_record(bucket, key)
        return None if stored is None else stored.record

    def stored_record(self, bucket: str, key: str) -> StoredRecord | None:
        """:meth:`record` with the ETag read, for a conditional write over it."""
        try:
            identity = identity_from_key(key)
        except InvalidIdentityError:
            return None
        return self.read_record(record_key(identity, source_id(bucket, key)))

    def records(self, identity: str | None = None) -> Iterator[SourceRecord]:
        """Every record, or those of one identity, in key order."""
        prefix = RECORDS if identity is None else f"{RECORDS}{normalise_identity(identity)}/"
        for info in self.store.list(self.bucket, prefix):
            record = self._read_record(info.key)
            if record is not None:
                yield record

    def record_versions(self) -> dict[str, str]:
        """``record key -> ETag`` of every record: what a poller compares to spot changes."""
        return {
            info.key: info.etag
            for info in self.store.list(self.bucket, RECORDS)
            if info.key.endswith(".json")
        }

    def read_record(self, key: str) -> StoredRecord | None:
        """The record stored at ``key`` with its ETag; None when it no longer exists."""
        try:
            stored = self.store.get(self.bucket, key)
        except ObjectNotFoundError:
            return None
        try:
            record = SourceRecord.from_json(json.loads(stored.data))
        except ValueError as exc:
            log.warning("ignoring unreadable gallery record %s: %s", key, exc)
            record = None
        return StoredRecord(key, stored.info.etag, record)

    def identities(self) -> dict[str, int]:
        """Enrolled face count per identity."""
        counts: dict[str, int] = {}
        for record in self.records():
            counts[record.identity] = counts.get(record.identity, 0) + len(record.faces)
        return counts

    def sources(self) -> dict[tuple[str, str], str]:
        """``(bucket, key) -> etag`` of every enrolled photo: what reconcile compares."""
        return {(r.bucket, r.key): r.etag for r in self.records()}

    def matrix(self, model_version: str) -> GalleryMatrix:
        """All faces embedded by ``model_version``, stacked for vectorised search."""
        face_ids: list[str] = []
        identities: list[str] = []
        vectors: list[np.ndarray] = []
        for record in self.records():
            if model_version not in record.model_versions:
                continue
            for face in record.faces:
                face_ids.append(face.face_id)
                identities.append(record.identity)
                vectors.append(self.embedding(face.face_id, model_version))
        matrix = np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
        return GalleryMatrix(model_version, face_ids, identities, matrix)

    def embedding(self, face: str, model_version: str) -> np.ndarray:
        return vector_from_bytes(
            self.store.get(self.bucket, _embedding_key(face, model_version)).data
        )

    def crop(self, face: str) -> np.ndarray:
        """The stored crop of ``face`` as RGB, laid out as ``GALLERY_CROP_256``."""
        return crop_from_png(self.store.get(self.bucket, f"{FACES}{face}/{CROP_NAME}").data)

    def face_keys(self, face: str) -> list[str]:
        """Every object stored for one face (its crop and each model's embedding)."""
        return [info.key for info in self.store.list(self.bucket, f"{FACES}{face}/")]

    # --- internals --------------------------------------------------------------------------

    def _remove(self, records: Sequence[SourceRecord]) -> None:
        """Records first, then the index (so a crash leaves the index to repair), then faces."""
        for record in records:
            self.store.delete(self.bucket, record_key(record.identity, record.source_id))
        for version in {v for r in records for v in r.model_versions}:
            faces = [f.face_id for r in records if version in r.model_versions for f in r.faces]
            self.index(version).apply(removed=faces)
        self._delete_faces(f.face_id for r in records for f in r.faces)

    def _delete_faces(self, faces: Iterable[str]) -> None:
        for face in faces:
            for key in self.face_keys(face):
                self.store.delete(self.bucket, key)

    def _put_crop(self, face: str, crop: np.ndarray) -> None:
        self.store.put(
            self.bucket, f"{FACES}{face}/{CROP_NAME}", crop_png(crop), content_type="image/png"
        )

    def _put_embedding(self, face: str, model_version: str, vector: np.ndarray) -> None:
        self.store.put(
            self.bucket,
            _embedding_key(face, model_version),
            vector_bytes(vector),
            metadata={"model-version": model_version, "dim": str(len(vector))},
            durable=False,  # re-created from the crop by re-embedding
        )

    def _put_record(self, record: SourceRecord, *, if_match: str | None = None) -> None:
        body = json.dumps(record.to_json(), ensure_ascii=False, indent=1).encode("utf-8")
        self.store.put(
            self.bucket,
            record_key(record.identity, record.source_id),
            body,
            content_type="application/json",
            if_match=if_match,
        )

    def _read_record(self, key: str) -> SourceRecord | None:
        stored = self.read_record(key)
        return None if stored is None else stored.record


def _segment(record: SourceRecord, vectors: np.ndarray) -> Segment:
    """The index rows of one record's faces."""
    ids = [f.face_id for f in record.faces]
    return Segment.build(ids, [record.identity] * len(ids), vectors)


def crop_png(crop: np.ndarray) -> bytes:
    """A face crop (RGB, ``GALLERY_CROP_256`` layout) as the PNG bytes stored for it."""
    if crop.shape != (GALLERY_CROP_256.size, GALLERY_CROP_256.size, 3):
        raise ValueError(f"crop must be laid out as GALLERY_CROP_256, got {crop.shape}")
    ok, png = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding of a face crop failed")
    return png.tobytes()


def crop_from_png(data: bytes) -> np.ndarray:
    """A stored crop's PNG bytes as RGB."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def vector_bytes(vector: np.ndarray) -> bytes:
    """An embedding as stored: float32 little-endian."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def vector_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def record_key(identity: str, source: str) -> str:
    return f"{RECORDS}{identity}/{source}.json"


def _embedding_key(face: str, model_version: str) -> str:
    return f"{FACES}{face}/{model_version}.f32"
