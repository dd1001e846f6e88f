"""Immutable gallery snapshots of one model version, built incrementally by polling the store.

Why polling: the gallery's truth is its commit records in the object store, written by the
enroll function in another process (or pod). Listing the records prefix is one cheap call on
both backends, and its ETags tell exactly which records changed, so a refresh fetches only
changed records and their faces' embeddings; removed records simply stop being listed. The
``face.enrolled`` events could trigger refreshes sooner later, but polling stays the safety
net that needs no subscription.

Why immutable snapshots: a request ranks against whichever snapshot it picked up, start to
end, while the refresher builds the next one aside and publishes it with one reference
assignment; no request ever sees half an update and none waits for a lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from facerank.errors import BucketNotFoundError, ObjectNotFoundError
from facerank.gallery import Gallery
from inference.search import GalleryIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GallerySnapshot:
    """Every enrolled face embedded by ``model_version``, at one moment, ready for search."""

    model_version: str
    index: GalleryIndex

    @classmethod
    def build(
        cls,
        model_version: str,
        face_ids: list[str],
        identities: list[str],
        vectors: list[np.ndarray] | np.ndarray,
    ) -> GallerySnapshot:
        rows = np.stack(vectors) if len(vectors) else np.zeros((0, 0), dtype=np.float32)
        return cls(model_version, GalleryIndex.build(face_ids, identities, rows))

    @property
    def face_ids(self) -> tuple[str, ...]:
        return self.index.face_ids

    @property
    def identities(self) -> tuple[str, ...]:
        return self.index.identities

    @property
    def vectors(self) -> np.ndarray:
        return self.index.vectors


@dataclass(frozen=True)
class _RecordFaces:
    """What one commit record (at one ETag) contributes to a snapshot."""

    etag: str
    identity: str
    face_ids: tuple[str, ...]
    vectors: tuple[np.ndarray, ...]


class GalleryRefresher:
    """Builds snapshots of ``gallery`` for one model version, re-reading only what changed.

    Each :meth:`refresh` is one poll (the first loads everything); whoever polls decides when
    (:class:`inference.follower.ServingFollower` does, on its timer).
    """

    def __init__(self, gallery: Gallery, model_version: str) -> None:
        self.gallery = gallery
        self.model_version = model_version
        self._records: dict[str, _RecordFaces] = {}
        self._polled = False

    def refresh(self) -> GallerySnapshot | None:
        """Poll once: a new snapshot if the gallery changed (always on the first poll).

        Store failures propagate: the caller decides whether to keep the previous snapshot.
        """
        listed = self._list_records()
        changed = not self._polled
        for key in self._records.keys() - listed.keys():
            del self._records[key]
            changed = True
        for key, etag in listed.items():
            cached = self._records.get(key)
            if cached is not None and cached.etag == etag:
                continue
            faces = self._load(key)
            if faces is None:
                changed |= self._records.pop(key, None) is not None
            else:
                self._records[key] = faces
                changed = True
        self._polled = True
        return self._snapshot() if changed else None

    def _list_records(self) -> dict[str, str]:
        try:
            return self.gallery.record_versions()
        except BucketNotFoundError:
            return {}

    def _load(self, key: str) -> _RecordFaces | None:
        """The faces a record lists, with their embeddings; None to read it afresh next poll.

        A record deleted or replaced while it is read (its embeddings already gone) answers
        None. An unreadable record is remembered at its ETag as contributing nothing, so it is
        not fetched (and warned about) again until it changes.
        """
        stored = self.gallery.read_record(key)
        if stored is None:
            return None
        etag, record = stored.etag, stored.record
        if record is None:
            return _RecordFaces(etag, "", (), ())
        if self.model_version not in record.model_versions:
            return _RecordFaces(etag, record.identity, (), ())
        ids = tuple(face.face_id for face in record.faces)
        try:
            vectors = tuple(self.gallery.embedding(f, self.model_version) for f in ids)
        except ObjectNotFoundError:
            return None
        return _RecordFaces(etag, record.identity, ids, vectors)

    def _snapshot(self) -> GallerySnapshot:
        face_ids: list[str] = []
        identities: list[str] = []
        vectors: list[np.ndarray] = []
        for entry in self._records.values():
            face_ids.extend(entry.face_ids)
            identities.extend([entry.identity] * len(entry.face_ids))
            vectors.extend(entry.vectors)
        return GallerySnapshot.build(self.model_version, face_ids, identities, vectors)
