"""Immutable gallery snapshots of one model version, kept current by following its index.

Why the index and not the records: the records are one object per photo, so reading them is
a GET per face (37 minutes for a million faces). The gallery index
(:mod:`facerank.gallery.index`) holds the same faces in a few large immutable segments and a
small manifest, so a cold start is a few large reads, a poll with nothing changed is one HEAD
of the manifest, and a change loads only the segments this process does not hold yet.

Why immutable snapshots: a request ranks against whichever snapshot it picked up, start to
end, while the refresher builds the next one aside and publishes it with one reference
assignment; no request ever sees half an update and none waits for a lock. A new snapshot
shares every unchanged segment with the previous one, so a change never copies the gallery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from facerank.errors import ObjectNotFoundError, StoreUnavailableError
from facerank.gallery import Gallery, Manifest, Segment
from facerank.gallery.index import MERGE_AT, SEGMENT_ROWS
from inference.approximate import ApproximateSegment
from inference.search import Match, Ranked, Searchable, search_all

log = logging.getLogger(__name__)

READ_ATTEMPTS = 5
"""Manifest reads per refresh while writers keep replacing the segments it lists."""
TAIL_ROWS = SEGMENT_ROWS // MERGE_AT
"""Segments smaller than this (those compaction still merges) are served as one tail."""
APPROXIMATE_MIN_ROWS = 16_384
"""Smaller segments are searched exactly even in an approximate gallery: scanning them costs
less than probing an index, and most are fresh enrollments not yet compacted."""


@dataclass(frozen=True)
class GallerySnapshot:
    """Every indexed face of ``model_version``, at one moment, ready for search."""

    model_version: str
    segments: tuple[Searchable | Ranked, ...] = field(default=())
    """The index's segments as served (exactly, or approximately through FAISS), or any
    in-memory :class:`~inference.search.GalleryIndex`."""

    @property
    def faces(self) -> int:
        return sum(len(s) for s in self.segments)

    @cached_property
    def identities(self) -> frozenset[str]:
        return frozenset(name for s in self.segments for name in s.names)

    def search(self, queries: np.ndarray, k: int, threshold: float) -> list[list[Match]]:
        """The ``k`` closest identities to each query row over every segment."""
        return search_all(self.segments, queries, k, threshold)

    def sample(self, limit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``limit`` indexed faces (all of a smaller gallery, else drawn at random):
        their unit rows and an identity code per row, shared across segments. What the
        open-set calibration (:mod:`facerank.openset`) measures, without copying a large
        gallery's vectors."""
        total = self.faces
        rng = np.random.default_rng(seed)
        wanted = np.arange(total) if total <= limit else np.sort(rng.choice(total, limit, False))
        vectors, names, start = [], [], 0
        for segment in self.segments:
            rows = wanted[(wanted >= start) & (wanted < start + len(segment))] - start
            start += len(segment)
            if isinstance(segment, ApproximateSegment):
                vectors.append(segment.rows.reconstruct_batch(rows.astype(np.int64)))
                codes = segment.members.codes[rows]
            else:
                vectors.append(np.asarray(segment.vectors)[rows])
                codes = np.searchsorted(segment.starts, rows, side="right") - 1
            names.extend(segment.names[c] for c in codes.tolist())
        if not vectors:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        identities = np.unique(np.array(names, dtype=str), return_inverse=True)[1]
        return np.concatenate(vectors).astype(np.float32, copy=False), identities.reshape(-1)


class GalleryRefresher:
    """Follows the index of one model version, producing a snapshot per change.

    Each :meth:`refresh` is one poll (the first loads everything); whoever polls decides when
    (:class:`inference.follower.ServingFollower` does, on its timer). Galleries of more than
    ``approximate_above`` faces (0: never) search their large segments approximately.

    Segments below :data:`TAIL_ROWS` (fresh enrollments not compacted yet, and every segment of
    a small gallery) are served folded into one in-memory tail: searching a dozen tiny
    matrices costs more in per-call overhead than one scan of them all. A change rebuilds the
    tail (at most a few tens of thousands of rows by the index's compaction tiers), never the
    large segments.
    """

    def __init__(self, gallery: Gallery, model_version: str, *, approximate_above: int = 0) -> None:
        self.index = gallery.index(model_version)
        self.model_version = model_version
        self.approximate_above = approximate_above
        self._etag: str | None = None
        self._large: dict[str, Searchable | Ranked] = {}
        self._small: dict[str, np.ndarray] = {}
        """Face ids of each small segment folded into ``_tail``, to take them out again."""
        self._tail: Segment | None = None
        self._approximate = False
        self._polled = False

    def refresh(self) -> GallerySnapshot | None:
        """Poll once: a new snapshot if the index changed (always on the first poll).

        Store failures propagate: the caller decides whether to keep the previous snapshot.
        """
        if self._polled and self.index.manifest_etag() == self._etag:
            return None
        for _ in range(READ_ATTEMPTS):
            manifest, etag = self.index.read()
            try:
                changed = self._follow(manifest)
            except ObjectNotFoundError:  # a writer replaced a listed segment: read again
                self.index.check_moved(etag)
                continue
            break
        else:
            raise StoreUnavailableError(
                f"index {self.model_version} kept changing while being read; next poll retries"
            )
        changed, self._etag, self._polled = changed or not self._polled, etag, True
        if not changed:
            return None
        tail = () if self._tail is None else (self._tail,)
        return GallerySnapshot(self.model_version, (*self._large.values(), *tail))

    def _follow(self, manifest: Manifest) -> bool:
        """Load the segments ``manifest`` lists that are not held, drop those it no longer
        lists; whether anything changed. Nothing is changed until every load succeeded."""
        approximate = 0 < self.approximate_above < manifest.rows
        if approximate != self._approximate:  # serve every segment anew
            self._large, self._small, self._tail = {}, {}, None
            self._approximate = approximate
        listed = {ref.name for ref in manifest.segments}
        held = self._large.keys() | self._small.keys()
        loaded = {name: self.index.load(name) for name in listed - held}
        gone_small = [name for name in self._small if name not in listed]
        changed = bool(loaded or gone_small or self._large.keys() - listed)
        self._large = {n: s for n, s in self._large.items() if n in listed}
        self._large |= {n: self._serving_form(s) for n, s in loaded.items() if len(s) >= TAIL_ROWS}
        fresh = {n: s for n, s in loaded.items() if len(s) < TAIL_ROWS}
        tail = self._tail
        gone_ids = [self._small.pop(name) for name in gone_small]
        if tail is not None and gone_ids:
            tail = tail.without(np.concatenate(gone_ids))
        if fresh:
            tail = Segment.merge([*(() if tail is None else (tail,)), *fresh.values()])
        self._small |= {n: s.face_ids for n, s in fresh.items()}
        self._tail = tail
        return changed

    def _serving_form(self, segment: Segment) -> Searchable | Ranked:
        """Large segments of a large gallery approximately, everything else exactly."""
        if self._approximate and len(segment) >= APPROXIMATE_MIN_ROWS:
            return ApproximateSegment.build(segment)
        return segment
