"""Immutable gallery snapshots of one model version, kept current by polling the store.

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
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facerank.errors import BucketNotFoundError, ObjectNotFoundError
from facerank.gallery import Gallery
from facerank.settings import Settings
from inference.search import GalleryIndex

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = Settings.gallery_refresh_s
"""Seconds between polls of the records prefix (``FACERANK_GALLERY_REFRESH_S``)."""


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
    """Builds snapshots of ``gallery`` for one model version and publishes each new one.

    :meth:`refresh` does one poll (the first one loads everything); :meth:`start` repeats it
    every ``interval`` seconds in a daemon thread until :meth:`stop`. ``publish`` receives every
    snapshot that differs from the previous one; it must be cheap (an assignment).
    """

    def __init__(
        self,
        gallery: Gallery,
        model_version: str,
        publish: Callable[[GallerySnapshot], None],
        *,
        interval: float = DEFAULT_REFRESH_S,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"refresh interval must be positive, got {interval}")
        self.gallery = gallery
        self.model_version = model_version
        self.interval = interval
        self._publish = publish
        self._records: dict[str, _RecordFaces] = {}
        self._published = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Poll once; True when the gallery changed. The first poll always publishes.

        Store failures propagate: the caller decides whether to keep the previous snapshot.
        """
        listed = self._list_records()
        changed = False
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
        if changed or not self._published:
            self._publish(self._snapshot())
            self._published = True
        return changed

    def start(self) -> None:
        """Poll in the background until :meth:`stop`; a failing poll keeps the last snapshot."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="gallery-refresh", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.refresh()
            except Exception:
                # Whatever broke (store outage, a bug), serving the previous snapshot beats
                # a dead refresher: log it and try again on the next tick.
                log.exception("gallery refresh failed; keeping the previous snapshot")

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
