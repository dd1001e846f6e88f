"""The gallery index of one model version: immutable segments listed by one small manifest.

Layout in the gallery bucket::

    index/<version>/manifest.json           the segments in force, with their row counts
    index/<version>/segments/<name>.vec     a segment's vectors (see :mod:`.segments`)
    index/<version>/segments/<name>.ids     its identities and face ids

Why this shape: the commit records stay the truth, one object per photo, which is right for
writers but means a million GETs for a reader. The index holds the same faces, derived from
the records, in a few large objects: a predictor loads it with a few reads, notices that
nothing changed with one HEAD of the manifest, and on a change loads only the segments it
does not hold yet.

Why a manifest advanced by conditional writes: many enroll workers change the index at once.
Each change writes new segment objects under fresh names (never touching one a reader may be
loading), then swaps them into the manifest with ``If-Match`` on the ETag it read; a writer
that lost the race deletes what it wrote and re-applies its change to the new manifest. No
update is lost, and a reader sees a change whole or not at all.

Why removals rewrite the segment instead of adding a tombstone: removing a person must leave
no trace of them in the store (see ``tests/test_access_unenroll.py``). Segments are capped at
:data:`SEGMENT_ROWS`, so a removal rewrites at most that many rows, never the gallery.

Why compaction is size-tiered: each enrollment adds a one-photo segment. When
:data:`MERGE_AT` segments of one size tier exist (tiers grow by that factor), the writer that
noticed merges them, so every row is rewritten about ``log_MERGE_AT(SEGMENT_ROWS)`` times in
its life and a gallery has a few dozen small segments plus ``faces / SEGMENT_ROWS`` full ones.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import numpy as np

from facerank.errors import (
    BucketNotFoundError,
    GalleryIndexDamagedError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from facerank.gallery.segments import IDS, VECTORS, Segment
from facerank.gallery.together import run_together
from facerank.storage import ObjectStore

log = logging.getLogger(__name__)

INDEX = "index/"
MANIFEST = "manifest.json"
SEGMENTS = "segments/"
FORMAT = "facerank.gallery.index/v1"
SEGMENT_ROWS = 65_536
"""Compaction never builds a segment larger than this: the most one removal rewrites
(about 34 MB at 128-D)."""
MERGE_AT = 8
"""Segments of one size tier that trigger a merge; tiers are powers of this factor."""


@dataclass(frozen=True)
class SegmentRef:
    """One segment as the manifest lists it."""

    name: str
    rows: int


@dataclass(frozen=True)
class Manifest:
    """The segments of one version's index, in the order they were added."""

    segments: tuple[SegmentRef, ...] = ()
    dim: int = 0
    """Vector width, 0 while the index is empty."""

    @property
    def rows(self) -> int:
        return sum(ref.rows for ref in self.segments)

    def to_json(self, model_version: str) -> dict[str, object]:
        return {
            "format": FORMAT,
            "model_version": model_version,
            "dim": self.dim,
            "segments": [{"name": r.name, "rows": r.rows} for r in self.segments],
        }

    @classmethod
    def from_json(cls, data: object) -> Manifest:
        """Parse a manifest; ``ValueError`` for anything that is not one."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a gallery index manifest (expected format {FORMAT!r})")
        try:
            refs = tuple(SegmentRef(str(s["name"]), int(s["rows"])) for s in data["segments"])
            return cls(refs, int(data["dim"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed gallery index manifest: {exc}") from None


State = tuple[Manifest, str | None]
"""A manifest and the ETag it is stored under (None: no manifest object)."""


@dataclass(frozen=True)
class IndexChange:
    """What one :meth:`EmbeddingIndex.apply` changed."""

    added: int = 0
    removed: int = 0


class EmbeddingIndex:
    """The index of one model version in one gallery bucket; safe to share between threads.

    Keeps the face ids of every segment it has seen (segments never change, so this cache is
    never stale) to tell which faces are indexed without reading vectors.
    """

    def __init__(self, store: ObjectStore, bucket: str, model_version: str) -> None:
        self.store = store
        self.bucket = bucket
        self.model_version = model_version
        self.prefix = f"{INDEX}{model_version}/"
        self._members: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    # --- reading ----------------------------------------------------------------------------

    def manifest_etag(self) -> str | None:
        """The manifest's ETag (one HEAD), None while there is no index."""
        try:
            return self.store.stat(self.bucket, self.prefix + MANIFEST).etag
        except (ObjectNotFoundError, BucketNotFoundError):
            return None

    def read(self) -> tuple[Manifest, str | None]:
        """The manifest and its ETag; an empty manifest and None while there is no index."""
        try:
            stored = self.store.get(self.bucket, self.prefix + MANIFEST)
        except (ObjectNotFoundError, BucketNotFoundError):
            return Manifest(), None
        try:
            return Manifest.from_json(json.loads(stored.data)), stored.info.etag
        except ValueError as exc:
            raise GalleryIndexDamagedError(
                f"index {self.model_version}: {exc}; run 'facerank gallery reindex --rebuild'"
            ) from None

    def load(self, name: str) -> Segment:
        """One segment, vectors included: two GETs."""
        ids = self.store.get(self.bucket, self._segment_key(name, IDS)).data
        vectors = self.store.get(self.bucket, self._segment_key(name, VECTORS)).data
        return Segment.from_bytes(ids, vectors)

    def face_ids(self) -> set[str]:
        """Every indexed face (reads only the ``.ids`` objects not seen before)."""
        while True:
            manifest, etag = self.read()
            try:
                members = [self._member_ids(ref.name) for ref in manifest.segments]
            except ObjectNotFoundError:
                self.check_moved(etag)
                continue
            return {bytes(f).decode() for ids in members for f in ids}

    # --- writing ----------------------------------------------------------------------------

    def apply(self, added: Segment | None = None, removed: Iterable[str] = ()) -> IndexChange:
        """Add the faces of ``added`` not indexed yet and drop those in ``removed``, at once.

        Idempotent: faces already present are not added twice, absent ones not removed. Loses
        no concurrent change (see the module docstring); then compacts if a tier is full.
        """
        gone = np.array(sorted({f.encode() for f in removed}), dtype=bytes)
        attempt = _Attempt()
        while True:
            manifest, etag = self.read()
            try:
                done = self._try(attempt, manifest, etag, added, gone)
            except ObjectNotFoundError:
                self.check_moved(etag)
                continue
            if done:
                break
        self._delete_segments(attempt.hit)
        rows_added = len(attempt.fresh) if attempt.fresh is not None else 0
        rows_removed = sum(r.rows for r in attempt.hit) - sum(r.rows for r in attempt.rewritten)
        if rows_added or rows_removed:
            self.compact(attempt.state)
        return IndexChange(rows_added, rows_removed)

    def compact(self, known: State | None = None) -> int:
        """Merge the smallest full tier of segments, if any; how many segments were merged.

        ``known`` is the manifest and ETag the caller just wrote, saving a read."""
        while True:
            manifest, etag = known or self.read()
            known = None
            group = plan_compaction(manifest.segments)
            if not group:
                return 0
            try:
                merged = self._write(Segment.merge(self.load(r.name) for r in group))
            except ObjectNotFoundError:  # another writer merged or rewrote one of them
                self.check_moved(etag)
                continue
            kept = tuple(r for r in manifest.segments if r not in group)
            if self._swap(Manifest((*kept, merged), manifest.dim), etag, [merged]) is not None:
                self._delete_segments(group)
                log.info("index %s: merged %d segments into one", self.model_version, len(group))
                return len(group)

    def clear(self) -> None:
        """Drop the whole index (a rebuild from the records follows)."""
        for info in list(self.store.list(self.bucket, self.prefix)):
            self.store.delete(self.bucket, info.key)
        with self._lock:
            self._members.clear()

    def collect_orphans(self, cutoff: datetime) -> int:
        """Delete segment objects the manifest does not list (left by crashes), older than
        ``cutoff``."""
        manifest, _ = self.read()
        listed = {r.name for r in manifest.segments}
        removed = 0
        for info in list(self.store.list(self.bucket, self.prefix + SEGMENTS)):
            name = info.key[len(self.prefix + SEGMENTS) :].rsplit(".", 1)[0]
            if name not in listed and info.last_modified < cutoff:
                self.store.delete(self.bucket, info.key)
                removed += 1
        return removed

    # --- internals --------------------------------------------------------------------------

    def _try(
        self,
        attempt: _Attempt,
        manifest: Manifest,
        etag: str | None,
        added: Segment | None,
        gone: np.ndarray,
    ) -> bool:
        """One attempt of :meth:`apply` on ``manifest``; False when another writer changed
        the manifest first. The new rows' segment is written once and kept across attempts
        while they stay the same, so contention costs manifest round trips, not rewrites."""
        fresh = self._not_indexed(manifest, added)
        if fresh is not None and manifest.dim and fresh.dim != manifest.dim:
            raise ValueError(
                f"{self.model_version} holds {manifest.dim}-D vectors, not {fresh.dim}-D"
            )
        if attempt.fresh_ref is not None and not attempt.same_fresh(fresh):
            self._delete_segments([attempt.fresh_ref])
            attempt.fresh_ref = None
        attempt.fresh = fresh
        attempt.hit = [r for r in manifest.segments if self._holds_any(r.name, gone)]
        attempt.rewritten = []
        if fresh is None and not attempt.hit:
            return True
        for ref in attempt.hit:
            rest = self.load(ref.name).without(gone)
            if rest is not None:
                attempt.rewritten.append(self._write(rest))
        if fresh is not None and attempt.fresh_ref is None:
            attempt.fresh_ref = self._write(fresh)
        added_refs = [*attempt.rewritten, *([attempt.fresh_ref] if attempt.fresh_ref else [])]
        kept = tuple(r for r in manifest.segments if r not in attempt.hit)
        dim = manifest.dim or (fresh.dim if fresh is not None else 0)
        attempt.state = self._swap(Manifest((*kept, *added_refs), dim), etag, attempt.rewritten)
        return attempt.state is not None

    def check_moved(self, etag: str | None) -> None:
        """A listed segment was missing: fine if the manifest moved on (re-read it), an error
        if it still lists it (the index is damaged; ``facerank gallery reindex`` rebuilds)."""
        if self.manifest_etag() == etag:
            raise GalleryIndexDamagedError(
                f"index {self.model_version} lists a segment that is gone: run "
                "'facerank gallery reindex --rebuild'"
            )

    def _not_indexed(self, manifest: Manifest, added: Segment | None) -> Segment | None:
        if added is None or not len(added):
            return None
        present = np.zeros(len(added), dtype=bool)
        for ref in manifest.segments:
            present |= _contains(self._member_ids(ref.name), added.face_ids)
        if present.all():
            return None
        return added if not present.any() else added.without(added.face_ids[present])

    def _holds_any(self, name: str, ids: np.ndarray) -> bool:
        return bool(ids.size) and bool(_contains(self._member_ids(name), ids).any())

    def _member_ids(self, name: str) -> np.ndarray:
        """Sorted face ids of segment ``name``, read once per process."""
        with self._lock:
            cached = self._members.get(name)
        if cached is None:
            ids = self.store.get(self.bucket, self._segment_key(name, IDS)).data
            cached = np.sort(Segment.from_bytes(ids, None).face_ids)
            with self._lock:
                self._members[name] = cached
        return cached

    def _write(self, segment: Segment) -> SegmentRef:
        name = uuid.uuid4().hex
        # Not flushed: a segment lost to a power cut is rebuilt from the records by repair.
        objects = ((VECTORS, segment.vectors_bytes()), (IDS, segment.ids_bytes()))
        put = partial(self.store.put, self.bucket, durable=False)
        run_together([partial(put, self._segment_key(name, s), data) for s, data in objects])
        with self._lock:
            self._members[name] = np.sort(segment.face_ids)
        return SegmentRef(name, len(segment))

    def _swap(
        self, manifest: Manifest, etag: str | None, written: Sequence[SegmentRef]
    ) -> State | None:
        """Put ``manifest`` if the stored one is still ``etag``, and return it with its new
        ETag; else undo ``written`` and return None."""
        body = json.dumps(manifest.to_json(self.model_version), indent=0).encode()
        key = self.prefix + MANIFEST
        try:
            if manifest.segments:
                # Not flushed, as the segments are not: the records, fsynced before any index
                # write, are the truth, and repair moves the index to them. A power cut may
                # lose the latest swaps whole (a rename never tears), never a record; flushing
                # the manifest measured a third of an enrollment's writes on the folder store.
                info = self.store.put(
                    self.bucket,
                    key,
                    body,
                    content_type="application/json",
                    if_match=etag,
                    if_none_match=etag is None,
                    durable=False,
                )
                return manifest, info.etag
            if etag is not None:
                # An empty index is no index: a gallery whose last face went is as it was
                # before its first (a conditional delete, so a concurrent add is not lost).
                self.store.delete(self.bucket, key, if_match=etag)
        except PreconditionFailedError:
            self._delete_segments(written)
            return None
        return manifest, None

    def _delete_segments(self, refs: Iterable[SegmentRef]) -> None:
        for ref in refs:
            for suffix in (VECTORS, IDS):
                self.store.delete(self.bucket, self._segment_key(ref.name, suffix))
            with self._lock:
                self._members.pop(ref.name, None)

    def _segment_key(self, name: str, suffix: str) -> str:
        return f"{self.prefix}{SEGMENTS}{name}{suffix}"


@dataclass
class _Attempt:
    """What the latest attempt of one :meth:`EmbeddingIndex.apply` found and wrote."""

    fresh: Segment | None = None
    """The rows to add that the index lacked."""
    fresh_ref: SegmentRef | None = None
    """Where ``fresh`` was written, reused by the next attempt if it adds the same rows."""
    hit: list[SegmentRef] = field(default_factory=list)
    """Segments holding removed faces."""
    rewritten: list[SegmentRef] = field(default_factory=list)
    """``hit`` rewritten without them."""
    state: State | None = None
    """The manifest written and its ETag, once an attempt succeeded."""

    def same_fresh(self, fresh: Segment | None) -> bool:
        return (
            fresh is not None
            and self.fresh is not None
            and np.array_equal(fresh.face_ids, self.fresh.face_ids)
        )


def plan_compaction(segments: Sequence[SegmentRef]) -> tuple[SegmentRef, ...]:
    """The segments to merge next: :data:`MERGE_AT` or more of the smallest tier that has
    that many, oldest first, as long as the result stays within :data:`SEGMENT_ROWS`."""
    tiers: dict[int, list[SegmentRef]] = {}
    for ref in segments:
        if ref.rows * MERGE_AT <= SEGMENT_ROWS:
            tiers.setdefault(_tier(ref.rows), []).append(ref)
    for tier in sorted(tiers):
        members = tiers[tier]
        if len(members) >= MERGE_AT:
            group, total = [], 0
            for ref in members:
                if total + ref.rows > SEGMENT_ROWS:
                    break
                group.append(ref)
                total += ref.rows
            return tuple(group)
    return ()


def _tier(rows: int) -> int:
    return int(math.log(max(rows, 1), MERGE_AT) + 1e-9)


def _contains(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Which of ``ids`` occur in ``sorted_ids`` (both fixed-width bytes), by binary search."""
    if not len(sorted_ids) or not len(ids):
        return np.zeros(len(ids), dtype=bool)
    # The needles take the haystack's width, never the other way round: the haystack is a
    # whole segment's ids (up to 65,536), and widening it on every call made an enrollment into
    # a 1M-face gallery 1.3x as costly as into an empty one. An id longer than that width
    # cannot be in the haystack (truncated, it might seem to be).
    width = sorted_ids.dtype.itemsize
    fits = np.char.str_len(ids) <= width if ids.dtype.itemsize > width else True
    needles = ids.astype(sorted_ids.dtype)
    at = np.minimum(np.searchsorted(sorted_ids, needles), len(sorted_ids) - 1)
    return (sorted_ids[at] == needles) & fits
