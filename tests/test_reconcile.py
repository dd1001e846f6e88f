"""Reconcile passes over a real bucket and gallery, on the folder store and on moto's S3.

The gallery is built with the real Gallery.enroll (dummy crops and unit vectors), the bucket
with real puts, and events land in a real sink, so a pass is checked end to end.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from facerank.events import (
    OBJECT_CREATED,
    OBJECT_DELETED,
    ObjectChangeData,
    bucket_source,
    object_event,
)
from facerank.gallery import Gallery
from facerank.settings import Settings
from facerank.storage import FolderStore, ObjectStore, S3Store
from functions.source.emitter import Emitter
from functions.source.reconcile import Reconciler, ReconcileReport
from functions.source.verdicts import RejectedVersions
from tests.plugins.sink import EventSink
from tests.test_gallery import enroll

FACES = "faces"


@pytest.fixture
def settings(store: ObjectStore, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings naming the store under test (the folder store lives in tmp_path/buckets)."""
    if isinstance(store, S3Store):
        endpoint = request.getfixturevalue("s3_server")
        return Settings.from_env({}, data_dir=tmp_path, store="s3", s3_endpoint=endpoint)
    return Settings.from_env({}, data_dir=tmp_path)


@pytest.fixture
def emitter(settings: Settings, event_sink: EventSink) -> Emitter:
    return Emitter(event_sink.url, settings, attempts=2, backoff=0.01)


@pytest.fixture
def gallery(store: ObjectStore) -> Gallery:
    return Gallery(store, "gallery")


@pytest.fixture
def reconciler(store: ObjectStore, gallery: Gallery, emitter: Emitter) -> Reconciler:
    store.ensure_bucket(FACES)
    gallery.ensure()
    return Reconciler(store, gallery, emitter)


def put(store: ObjectStore, key: str) -> str:
    """Put a distinct object at ``key``; its ETag."""
    return store.put(FACES, key, f"photo {key}".encode(), content_type="image/jpeg").etag


def created_id(settings: Settings, key: str, etag: str) -> str:
    """The id a push notification of this object version carries."""
    data = ObjectChangeData(FACES, key, etag)
    return object_event("created", bucket_source(settings, FACES), data)["id"]


def test_pass_emits_exactly_the_differences_then_nothing(
    store: ObjectStore,
    gallery: Gallery,
    reconciler: Reconciler,
    event_sink: EventSink,
    settings: Settings,
) -> None:
    enroll(gallery, "alice/same.jpg", put(store, "alice/same.jpg"))
    new = put(store, "alice/new.jpg")
    enroll(gallery, "bob/changed.jpg", "0" * 32)
    changed = put(store, "bob/changed.jpg")
    enroll(gallery, "carol/gone.jpg", "1" * 32)

    report = reconciler.run_once()

    assert report == ReconcileReport(objects=3, enrolled=3, created=2, deleted=1)
    events = event_sink.wait_for(3)
    assert [(e["type"], e["subject"]) for e in events] == [
        (OBJECT_CREATED, "alice/new.jpg"),
        (OBJECT_CREATED, "bob/changed.jpg"),
        (OBJECT_DELETED, "carol/gone.jpg"),
    ]
    assert [e.get_data().get("etag") for e in events] == [new, changed, None]
    assert events[0]["id"] == created_id(settings, "alice/new.jpg", new)

    enroll(gallery, "alice/new.jpg", new)
    enroll(gallery, "bob/changed.jpg", changed)
    gallery.remove_source(FACES, "carol/gone.jpg")
    assert reconciler.run_once() == ReconcileReport(objects=3, enrolled=3)
    assert len(event_sink.events) == 3


def test_lost_notification_is_found_with_the_id_push_would_use(
    store: ObjectStore,
    gallery: Gallery,
    reconciler: Reconciler,
    event_sink: EventSink,
    settings: Settings,
) -> None:
    enroll(gallery, "dave/1.jpg", put(store, "dave/1.jpg"))
    data = b"\xff\xd8 a photo whose notification was lost"
    store.put(FACES, "dave/2.jpg", data)  # no push delivered on purpose

    assert reconciler.run_once().created == 1
    [event] = event_sink.wait_for(1)
    etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert event.get_data() == {
        "bucket": FACES,
        "key": "dave/2.jpg",
        "etag": etag,
        "size": len(data),
    }
    assert event["id"] == created_id(settings, "dave/2.jpg", etag)


def test_sink_down_is_reported_and_the_next_pass_catches_up(
    store: ObjectStore, reconciler: Reconciler, event_sink: EventSink
) -> None:
    put(store, "erin/1.jpg")
    put(store, "erin/2.jpg")
    event_sink.status = 503
    assert reconciler.run_once() == ReconcileReport(objects=2, errors=1)
    event_sink.status = 202
    assert reconciler.run_once() == ReconcileReport(objects=2, created=2)
    assert len(event_sink.wait_for(2)) == 2


def test_missing_faces_bucket_is_an_error_not_a_mass_deletion(
    gallery: Gallery, emitter: Emitter, event_sink: EventSink
) -> None:
    gallery.ensure()
    enroll(gallery, "frank/1.jpg", "2" * 32)
    reconciler = Reconciler(gallery.store, gallery, emitter)
    assert reconciler.run_once() == ReconcileReport(errors=1)
    event_sink.assert_quiet(0, seconds=0.1)


def test_missing_gallery_bucket_is_an_empty_gallery(
    store: ObjectStore, gallery: Gallery, emitter: Emitter, event_sink: EventSink
) -> None:
    store.ensure_bucket(FACES)
    put(store, "gina/1.jpg")
    assert Reconciler(store, gallery, emitter).run_once() == ReconcileReport(objects=1, created=1)


def run_in_thread(
    reconciler: Reconciler, interval: float
) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=reconciler.run_periodically, args=(interval, stop))
    thread.start()
    return thread, stop


def test_interval_zero_runs_one_pass(
    store: ObjectStore, reconciler: Reconciler, event_sink: EventSink
) -> None:
    put(store, "hank/1.jpg")
    thread, _ = run_in_thread(reconciler, 0)
    thread.join(5)
    assert not thread.is_alive()
    assert len(event_sink.events) == 1


def test_periodic_passes_survive_failures_until_stopped(
    store: ObjectStore, reconciler: Reconciler, event_sink: EventSink
) -> None:
    put(store, "ida/1.jpg")
    event_sink.status = 503
    thread, stop = run_in_thread(reconciler, 0.05)
    try:
        # Passes that fail, observed: the sink refused the photo's event at least twice.
        event_sink.wait_until(lambda refused: len(refused) >= 2, refused=True)
        assert thread.is_alive()
        assert event_sink.events == []
        event_sink.status = 202
        first, second = event_sink.wait_for(2)[:2]  # nothing enrolls, so it comes again
        assert first["id"] == second["id"]
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_versions_enroll_rejected_are_not_sent_again(
    store: ObjectStore, gallery: Gallery, emitter: Emitter, event_sink: EventSink
) -> None:
    store.ensure_bucket(FACES)
    gallery.ensure()
    rejected = RejectedVersions()
    reconciler = Reconciler(store, gallery, emitter, rejected)
    etag = put(store, "wall/1.jpg")
    rejected.add("wall/1.jpg", etag)

    assert reconciler.run_once() == ReconcileReport(objects=1, known_rejected=1)
    store.put(FACES, "wall/1.jpg", b"a new version, maybe with a face")
    assert reconciler.run_once() == ReconcileReport(objects=1, created=1)
    assert [e["subject"] for e in event_sink.wait_for(1)] == ["wall/1.jpg"]


def test_an_hourly_sweep_collects_objects_left_by_a_crashed_enrollment(
    folder_store: FolderStore, emitter: Emitter, tmp_path: Path
) -> None:
    """Face objects written before a crash, with no record, are deleted once past the grace."""
    gallery = Gallery(folder_store, "gallery")
    folder_store.ensure_bucket(FACES)
    gallery.ensure()
    kept = enroll(gallery, "alice/1.jpg", put(folder_store, "alice/1.jpg"))
    for name in ("crop.png", "lbp-v0.f32"):
        folder_store.put("gallery", f"faces/crashed-0/{name}", b"left behind")
    an_hour_ago = time.time() - 3600
    for path in (folder_store.root / "gallery" / "faces").rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    reconciler = Reconciler(folder_store, gallery, emitter)

    assert reconciler.run_once().orphans_collected == 2
    assert gallery.face_keys("crashed-0") == []
    assert gallery.face_keys(kept.faces[0].face_id) != []
    folder_store.put("gallery", "faces/crashed-1/crop.png", b"left behind")
    assert reconciler.run_once().orphans_collected == 0  # the next sweep is an hour away
