"""Delivery faults: duplicated, reordered and replayed events, vanished objects, a store outage.

At-least-once delivery means every event may arrive twice, late, out of order, or about an
object that is gone by then; the enroll function must end in the state the bucket describes
whatever the order. A store outage must not lose a photo either: the function answers 503, the
broker retries with backoff and then dead-letters the event, nothing half-written becomes
visible, and the next reconcile pass repairs the gallery once the store is back.

Everything runs for real over HTTP: the enroll function and the local broker in this process
on loopback ports, S3 on moto's server (one of its own for the outage, stopped and restarted on
the same port, see :mod:`tests.plugins.s3_outage`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import requests
import urllib3
import yaml
from cloudevents.http import CloudEvent

from facerank.broker import LocalBroker
from facerank.broker import create_app as broker_app
from facerank.cehttp import to_binary
from facerank.events import ObjectChangeData, object_event
from facerank.gallery import Gallery
from facerank.gallery.gallery import FACES, RECORDS
from facerank.settings import Settings
from facerank.storage import ObjectStore, S3Store
from functions.enroll.app import create_app as enroll_app
from functions.enroll.handler import build_handler
from functions.source.emitter import Emitter
from functions.source.reconcile import Reconciler
from tests.plugins.enroller import lfw_photo
from tests.plugins.faces import encode
from tests.plugins.hostile import store_digest
from tests.plugins.http import serving
from tests.plugins.s3_outage import S3Server
from tests.plugins.s3_server import S3_ACCESS_KEY, S3_SECRET_KEY

SOURCE = "http://s3.test/faces"
RETRIES = 3
BACKOFF_S = 0.2
WAIT_S = 30.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def created(key: str, etag: str) -> CloudEvent:
    return object_event("created", SOURCE, ObjectChangeData("faces", key, etag=etag))


def deleted(key: str) -> CloudEvent:
    return object_event("deleted", SOURCE, ObjectChangeData("faces", key))


def post(url: str, event: CloudEvent) -> int:
    headers, body = to_binary(event)
    return requests.post(url, data=body, headers=headers, timeout=60).status_code


def visible(gallery: Gallery) -> dict[str, str]:
    """What any reader can see: the commit records, byte for byte (by ETag)."""
    return {info.key: info.etag for info in gallery.store.list(gallery.bucket, RECORDS)}


def assert_consistent(gallery: Gallery) -> None:
    """Every face a record lists has its crop and every embedding the record claims, and no
    face object is left that no record lists: nothing half-written, no debris."""
    listed = {}
    for record in gallery.records():
        for face in record.faces:
            listed[face.face_id] = record.model_versions
    stored: dict[str, set[str]] = {}
    for info in gallery.store.list(gallery.bucket, FACES):
        face, name = info.key[len(FACES) :].split("/", 1)
        stored.setdefault(face, set()).add(name)
    assert set(stored) == set(listed), "face objects without a record, or records without faces"
    for face, versions in listed.items():
        assert stored[face] == {"crop.png", *(f"{v}.f32" for v in versions)}


@pytest.fixture(scope="module")
def photos(astronaut: np.ndarray, lfw_faces: np.ndarray) -> list[bytes]:
    return [encode(astronaut, "JPEG", quality=90)] + [
        encode(lfw_photo(lfw_faces, i), "JPEG", quality=90) for i in range(3)
    ]


# --- duplicated, reordered and replayed events --------------------------------------------


def test_any_order_and_any_repetition_ends_in_the_bucket_state(
    store: ObjectStore, tmp_path: Path, photos: list[bytes]
) -> None:
    store.ensure_bucket("faces")
    handler = build_handler(Settings(data_dir=tmp_path), store)
    handler.gallery.ensure()
    gallery = handler.gallery
    history: list[CloudEvent] = []
    with serving(enroll_app(handler, api_token="")) as url:

        def deliver(event: CloudEvent, status: int) -> None:
            history.append(event)
            assert post(url, event) == status

        # Duplicated: the second delivery rewrites nothing.
        a = store.put("faces", "anna/1.jpg", photos[0]).etag
        deliver(created("anna/1.jpg", a), 200)
        once = store_digest(store, ["gallery"])
        deliver(created("anna/1.jpg", a), 200)
        assert store_digest(store, ["gallery"]) == once

        # Reordered: a photo replaced twice, its events arriving newest first.
        old = store.put("faces", "ben/1.jpg", photos[1]).etag
        new = store.put("faces", "ben/1.jpg", photos[2]).etag
        deliver(created("ben/1.jpg", new), 200)
        newest = store_digest(store, ["gallery"])
        deliver(created("ben/1.jpg", old), 202)  # stale: the object is now `new`
        assert store_digest(store, ["gallery"]) == newest

        # Reordered: a deletion overtaking the creation of the same (now gone) photo.
        gone = store.put("faces", "cleo/1.jpg", photos[3]).etag
        store.delete("faces", "cleo/1.jpg")
        deliver(deleted("cleo/1.jpg"), 202)
        deliver(created("cleo/1.jpg", gone), 202)  # the object no longer exists

        # Replayed: an old creation after the photo and its faces were removed.
        d = store.put("faces", "dora/1.jpg", photos[3]).etag
        deliver(created("dora/1.jpg", d), 200)
        store.delete("faces", "dora/1.jpg")
        deliver(deleted("dora/1.jpg"), 200)
        deliver(created("dora/1.jpg", d), 202)

        # An event for an object that never existed.
        deliver(created("eve/1.jpg", "0" * 32), 202)

        final = store_digest(store, ["gallery"])
        for event in history:  # the whole history once more, as a replaying broker would
            post(url, event)
        assert store_digest(store, ["gallery"]) == final
    assert gallery.identities() == {"anna": 1, "ben": 1}
    assert gallery.record("faces", "ben/1.jpg").etag == new
    assert_consistent(gallery)


# --- the store going down in the middle of an enrollment ----------------------------------


@dataclass
class World:
    s3: S3Server
    store: S3Store
    gallery: Gallery
    broker_url: str
    state: Path
    settings: Settings


def write_eventing(folder: Path) -> Path:
    """The real routing (object events to enroll) with a fast delivery policy."""
    broker = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "facerank"},
        "spec": {
            "delivery": {
                "retry": RETRIES,
                "backoffPolicy": "exponential",
                "backoffDelay": f"PT{BACKOFF_S}S",
                "timeout": "PT20S",
            }
        },
    }
    triggers = [
        {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": f"enroll-on-object-{kind}"},
            "spec": {
                "broker": "facerank",
                "filter": {"attributes": {"type": f"dev.facerank.object.{kind}.v1"}},
                "subscriber": {
                    "ref": {
                        "apiVersion": "serving.knative.dev/v1",
                        "kind": "Service",
                        "name": "facerank-enroll",
                    }
                },
            },
        }
        for kind in ("created", "deleted")
    ]
    folder.mkdir(parents=True)
    (folder / "eventing.yaml").write_text(yaml.safe_dump_all([broker, *triggers]), "utf-8")
    return folder


@pytest.fixture
def world(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[World]:
    s3 = S3Server(free_port())
    s3.start()
    reset = urllib3.request("POST", f"{s3.endpoint}/moto-api/reset", timeout=10.0)
    assert reset.status == 200
    store = S3Store(s3.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY)
    for bucket in ("faces", "gallery", "models"):
        store.ensure_bucket(bucket)
    settings = Settings.from_env(
        {}, data_dir=tmp_path / "data", eventing_dir=write_eventing(tmp_path / "eventing")
    )
    handler = build_handler(settings, store)
    try:
        with serving(enroll_app(handler, api_token="")) as enroll_url:
            broker = LocalBroker.from_settings(
                settings.replace(broker_subscribers=f"facerank-enroll={enroll_url}")
            )
            broker.start()
            try:
                with serving(broker_app(broker)) as broker_url:
                    yield World(
                        s3,
                        store,
                        handler.gallery,
                        broker_url,
                        tmp_path / "data" / "broker",
                        settings,
                    )
            finally:
                broker.stop(grace=2.0)
    finally:
        s3.stop()


def dead_letters(world: World) -> list[dict]:
    return [json.loads(p.read_text("utf-8")) for p in world.state.glob("dead-letter/*/*.json")]


def test_store_outage_mid_enrollment_is_retried_dead_lettered_and_repaired(
    world: World, photos: list[bytes]
) -> None:
    gallery, store = world.gallery, world.store
    first = store.put("faces", "anna/1.jpg", photos[0]).etag
    assert post(world.broker_url, created("anna/1.jpg", first)) == 202
    wait_for(lambda: gallery.identities() == {"anna": 1}, "anna to be enrolled")
    # The record is written before the index: anna's enrollment ends with her index rows, and
    # only then may the outage count the gallery's writes, or her index write is the one cut.
    [record] = gallery.records("anna")
    wait_for(
        lambda: all(gallery.index(v).read()[0].rows == 1 for v in record.model_versions),
        "anna's index rows",
    )
    before = visible(gallery)

    etag = store.put("faces", "ben/1.jpg", photos[1]).etag
    world.s3.stop_at_write("gallery", 2)  # after ben's crop, before his embedding and record
    assert post(world.broker_url, created("ben/1.jpg", etag)) == 202
    assert world.s3.cut.wait(WAIT_S), "the enrollment never wrote to the gallery"
    world.s3.stop()

    wait_for(lambda: dead_letters(world), "the event to be dead-lettered")
    [letter] = dead_letters(world)
    assert letter["reason"] == "retries exhausted"
    assert letter["attempts"] == RETRIES + 1
    assert {a["status"] for a in letter["history"]} == {503}
    times = [datetime.fromisoformat(a["at"]) for a in letter["history"]]
    for i, (earlier, later) in enumerate(itertools.pairwise(times)):
        assert later - earlier >= timedelta(seconds=0.9 * BACKOFF_S * 2**i), "no backoff"
    assert letter["event"]["subject"] == "ben/1.jpg"

    world.s3.start()  # same port, same objects
    assert visible(gallery) == before, "a half-written enrollment became visible"
    assert gallery.identities() == {"anna": 1}
    anna = {f.face_id for f in gallery.records("anna") for f in f.faces}
    debris = [i.key for i in store.list("gallery", FACES) if i.key.split("/")[1] not in anna]
    assert debris, "the outage should have cut ben's enrollment after his crop"

    emitter = Emitter(world.broker_url + "/", world.settings)
    report = Reconciler(store, gallery, emitter).run_once()
    assert (report.created, report.deleted, report.errors) == (1, 0, 0)
    wait_for(lambda: gallery.identities() == {"anna": 1, "ben": 1}, "reconcile to repair ben")
    assert_consistent(gallery)  # ben's leftovers were rewritten and are now his faces
    assert len(dead_letters(world)) == 1
