"""Reconcile: compare the faces bucket with the gallery and emit what notifications missed.

Push notifications can be lost (MinIO restarted without a queue, the source was down, a
watcher missed a file). A periodic pass makes that harmless: every photo whose version the
gallery has not enrolled gets a created event, every enrolled photo that is gone gets a deleted
event. Creations use the same ids push would have used (bucket + key + ETag), so a photo both
pushed and reconciled is one event to anyone who deduplicates.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from facerank.errors import BucketNotFoundError, FacerankError
from facerank.events import DeliveryError
from facerank.gallery import Gallery
from facerank.storage import ObjectInfo, ObjectStore
from functions.source.emitter import Change, Emitter, Outcome
from functions.source.verdicts import RejectedVersions

log = logging.getLogger(__name__)

ORPHAN_SWEEP_S = 3600.0
"""At most this often a pass also repairs drift between the records and the gallery index and
collects objects no record lists (both left by crashes): it reads every record, and both are
rare, so once an hour is plenty."""


@dataclass(frozen=True)
class ReconcileReport:
    """What one pass found and did; ``errors`` counts failures that cut the pass short."""

    objects: int = 0
    enrolled: int = 0
    created: int = 0
    deleted: int = 0
    skipped: int = 0
    """Changes the emitter ignored or rejected (junk names, invalid keys)."""
    known_rejected: int = 0
    """Photos not sent again: enroll already rejected this version of them."""
    orphans_collected: int = 0
    """Gallery objects no record lists, deleted by this pass's hourly sweep."""
    index_repaired: int = 0
    """Faces the hourly sweep added to or dropped from the gallery index to match the records
    (drift left by a crash between a record write and its index write)."""
    errors: int = 0

    def summary(self) -> str:
        return (
            f"{self.objects} photos, {self.enrolled} enrolled: emitted {self.created} created, "
            f"{self.deleted} deleted; {self.skipped} skipped, {self.known_rejected} known "
            f"rejected, {self.errors} errors, {self.orphans_collected} orphans collected, "
            f"{self.index_repaired} index rows repaired"
        )


Processed = Callable[[], Mapping[str, str]]
"""``key -> etag`` of the photos of a bucket its consumer has handled: the gallery's records
for the faces bucket, the results for the queries bucket."""


class Reconciler:
    """One reconcile pass at a time over one bucket (``emitter.bucket``, the faces bucket, by
    default) against what its consumer has handled (``processed``: by default the gallery)."""

    def __init__(
        self,
        store: ObjectStore,
        gallery: Gallery,
        emitter: Emitter,
        rejected: RejectedVersions | None = None,
        *,
        bucket: str | None = None,
        processed: Processed | None = None,
    ) -> None:
        self.store = store
        self.gallery = gallery
        self.emitter = emitter
        self.rejected = rejected if rejected is not None else RejectedVersions()
        self.bucket = bucket or emitter.bucket
        self.processed = processed or (lambda: enrolled_photos(gallery, self.bucket))
        self._sweeps_gallery = processed is None
        """The gallery's orphans are swept by the pass that reconciles the gallery."""
        self._next_sweep = 0.0

    def run_once(self) -> ReconcileReport:
        """Emit the changes that bring the gallery in line with the bucket; never raises for
        store or sink failures, which are logged and reported so the next pass retries."""
        started = time.monotonic()
        try:
            objects = list(self.store.list(self.bucket))
            enrolled = self.processed()
        except FacerankError as exc:
            log.warning("reconcile pass skipped: %s", exc)
            return ReconcileReport(errors=1)
        fresh = [o for o in objects if (o.key, o.etag) not in self.rejected]
        changes = plan(fresh, enrolled, self.bucket, present=objects)
        report = self._emit(changes, len(objects), enrolled)
        repaired, orphans = self._sweep()
        report = dataclasses.replace(
            report,
            known_rejected=len(objects) - len(fresh),
            orphans_collected=orphans,
            index_repaired=repaired,
        )
        log.info(
            "reconcile pass: bucket %s: %s (%.2f s)",
            self.bucket,
            report.summary(),
            time.monotonic() - started,
        )
        return report

    def _sweep(self) -> tuple[int, int]:
        """When the hourly sweep is due: repair index drift, then collect crash leftovers
        (rows repaired, objects collected); failures wait for the next sweep."""
        if not self._sweeps_gallery or time.monotonic() < self._next_sweep:
            return 0, 0
        self._next_sweep = time.monotonic() + ORPHAN_SWEEP_S
        try:
            changes = self.gallery.repair_indexes().values()
            repaired = sum(c.added + c.removed for c in changes)
            return repaired, self.gallery.collect_orphans()
        except FacerankError as exc:
            log.warning("gallery sweep skipped: %s", exc)
            return 0, 0

    def _emit(
        self, changes: list[Change], objects: int, enrolled: Mapping[str, str]
    ) -> ReconcileReport:
        counts = {"created": 0, "deleted": 0, "skipped": 0}
        for done, change in enumerate(changes):
            try:
                outcome = self.emitter.emit(change)
            except DeliveryError as exc:  # the sink is down: the rest would fail alike
                left = len(changes) - done
                log.warning(
                    "reconcile pass cut short, %d change(s) left for the next: %s", left, exc
                )
                return ReconcileReport(objects, len(enrolled), errors=1, **counts)
            counts[change.kind if outcome is Outcome.EMITTED else "skipped"] += 1
        return ReconcileReport(objects, len(enrolled), **counts)

    def run_periodically(self, interval: float, stop: threading.Event) -> None:
        """Pass now, then every ``interval`` seconds until ``stop`` is set (0: once only).

        Meant as a thread's target: nothing it meets may end the thread, so even unexpected
        errors are logged and the next pass goes ahead.
        """
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("reconcile pass failed unexpectedly")
            if interval <= 0 or stop.wait(interval):
                return


def enrolled_photos(gallery: Gallery, bucket: str) -> dict[str, str]:
    """``key -> etag`` of the photos of ``bucket`` the gallery has enrolled.

    A missing gallery bucket is an empty gallery: enroll creates it with its first record.
    (A missing faces bucket, by contrast, is an error for the caller: read as "no photos", a
    wrong bucket name would un-enroll everyone.)
    """
    try:
        sources = gallery.sources()
    except BucketNotFoundError:
        return {}
    return {key: etag for (source, key), etag in sources.items() if source == bucket}


def plan(
    objects: Iterable[ObjectInfo],
    enrolled: Mapping[str, str],
    bucket: str,
    *,
    present: Iterable[ObjectInfo] | None = None,
) -> list[Change]:
    """Created for each of ``objects`` whose ETag the gallery lacks, deleted for each enrolled
    key that is no longer in the bucket (``present``, by default ``objects``); in key order so
    passes are reproducible."""
    candidates = {info.key: info for info in objects}
    existing = set(candidates) if present is None else {info.key for info in present}
    created = [
        Change.created(bucket, key, info.etag, info.size)
        for key, info in sorted(candidates.items())
        if enrolled.get(key) != info.etag
    ]
    deleted = [Change.deleted(bucket, key) for key in sorted(enrolled) if key not in existing]
    return created + deleted
