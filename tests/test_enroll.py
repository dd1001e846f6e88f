"""The enroll function as a real HTTP server receiving real CloudEvents, on both store backends."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from facerank.cehttp import from_http, json_data, to_binary
from facerank.events import (
    FACE_ENROLLED,
    FACE_REJECTED,
    FACE_REMOVED,
    ObjectChangeData,
    object_event,
)
from facerank.gallery import Gallery
from facerank.settings import Settings
from facerank.storage import ObjectStore, S3Store
from functions.enroll.app import create_app
from functions.enroll.handler import build_handler
from tests.plugins.faces import encode
from tests.plugins.http import serving

SOURCE = "file:///test/faces"


class EnrollService:
    """The function under test, plus what a test needs to drive and inspect it."""

    def __init__(self, url: str, store: ObjectStore, gallery: Gallery) -> None:
        self.url = url
        self.store = store
        self.gallery = gallery

    def upload(self, key: str, data: bytes) -> str:
        return self.store.put("faces", key, data).etag

    def send(self, event: CloudEvent, *, structured: bool = False) -> requests.Response:
        headers, body = to_structured(event) if structured else to_binary(event)
        return requests.post(self.url, data=body, headers=headers, timeout=60)

    def created(self, key: str, etag: str, **kwargs: Any) -> requests.Response:
        data = ObjectChangeData("faces", key, etag=etag)
        return self.send(object_event("created", SOURCE, data), **kwargs)

    def deleted(self, key: str) -> requests.Response:
        return self.send(object_event("deleted", SOURCE, ObjectChangeData("faces", key)))

    def gallery_state(self) -> dict[str, str]:
        return {i.key: i.etag for i in self.store.list("gallery")}


def reply_of(response: requests.Response) -> CloudEvent:
    """The reply event, with its JSON data decoded."""
    assert response.status_code == 200, response.text
    reply = from_http(response.headers, response.content)
    return CloudEvent(dict(reply.get_attributes()), json_data(reply))


def make_service(store: ObjectStore, tmp_path: Path, **settings: Any) -> Iterator[EnrollService]:
    config = Settings(data_dir=tmp_path, **settings)
    store.ensure_bucket("faces")
    handler = build_handler(config, store)
    handler.gallery.ensure()
    with serving(create_app(handler, api_token="")) as url:
        yield EnrollService(url, store, handler.gallery)


@pytest.fixture
def service(store: ObjectStore, tmp_path: Path) -> Iterator[EnrollService]:
    yield from make_service(store, tmp_path)


@pytest.fixture(scope="module")
def photo() -> bytes:
    from skimage import data as skdata

    return encode(skdata.astronaut(), "JPEG", quality=92)


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_created_event_enrolls_the_face(
    service: EnrollService, photo: bytes, structured: bool
) -> None:
    etag = service.upload("eileen/1.jpg", photo)
    reply = reply_of(service.created("eileen/1.jpg", etag, structured=structured))
    assert reply["type"] == FACE_ENROLLED
    assert reply["subject"] == "eileen/1.jpg"
    data = reply.get_data()
    assert data["identity"] == "eileen"
    assert data["model_version"] == "lbp-v0"
    assert data["faces_seen"] == 1
    [face] = data["faces"]
    assert face["detector"] == "haar"  # the test cache has no SSD
    assert service.gallery.identities() == {"eileen": 1}
    assert service.gallery.matrix("lbp-v0").face_ids == [face["face_id"]]


def test_identities_beyond_latin1_travel_as_percent_encoded_headers(
    service: EnrollService, photo: bytes
) -> None:
    """ce-subject carries the key; the HTTP binding percent-encodes it, both ways."""
    key = "李雷/照片.jpg"
    reply = reply_of(service.created(key, service.upload(key, photo)))
    assert reply["subject"] == key
    assert reply.get_data()["identity"] == "李雷"
    assert service.gallery.identities() == {"李雷": 1}


def test_duplicate_delivery_leaves_one_entry(service: EnrollService, photo: bytes) -> None:
    etag = service.upload("eileen/1.jpg", photo)
    first = reply_of(service.created("eileen/1.jpg", etag))
    state = service.gallery_state()
    second = reply_of(service.created("eileen/1.jpg", etag))
    assert second["id"] == first["id"]
    assert service.gallery_state() == state
    assert service.gallery.identities() == {"eileen": 1}


def test_twenty_concurrent_enrollments_make_twenty_entries(
    service: EnrollService, photo: bytes
) -> None:
    keys = [f"person{i % 5}/{i}.jpg" for i in range(20)]
    etags = [service.upload(key, photo) for key in keys]
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(service.created, keys, etags))
    assert all(reply_of(r)["type"] == FACE_ENROLLED for r in responses)
    assert service.gallery.identities() == {f"person{i}": 4 for i in range(5)}


def test_deleting_the_object_removes_every_trace(service: EnrollService, photo: bytes) -> None:
    etag = service.upload("eileen/1.jpg", photo)
    before = service.gallery_state()
    face_id = reply_of(service.created("eileen/1.jpg", etag)).get_data()["faces"][0]["face_id"]
    service.store.delete("faces", "eileen/1.jpg")
    reply = reply_of(service.deleted("eileen/1.jpg"))
    assert reply["type"] == FACE_REMOVED
    assert reply.get_data()["face_ids"] == [face_id]
    assert service.gallery_state() == before
    assert service.deleted("eileen/1.jpg").status_code == 202  # redelivery: nothing left to do


def test_stale_events_change_nothing(service: EnrollService, photo: bytes) -> None:
    etag = service.upload("eileen/1.jpg", photo)
    assert service.created("eileen/1.jpg", "an-older-etag").status_code == 202
    assert service.gallery.identities() == {}
    reply_of(service.created("eileen/1.jpg", etag))
    assert service.deleted("eileen/1.jpg").status_code == 202  # the object still exists
    assert service.gallery.identities() == {"eileen": 1}
    assert service.created("eileen/gone.jpg", "x").status_code == 202  # never existed


@pytest.fixture(scope="module")
def bad_photos(photo: bytes) -> dict[str, bytes]:
    blank = np.full((300, 300, 3), 80, np.uint8)
    return {"truncated": photo[: len(photo) // 2], "text": b"just text", "blank": encode(blank)}


@pytest.mark.parametrize(
    ("name", "reason"),
    [("truncated", "truncated_image"), ("text", "not_an_image"), ("blank", "no_face")],
)
def test_unusable_photos_are_rejected_and_the_gallery_is_unchanged(
    service: EnrollService, bad_photos: dict[str, bytes], name: str, reason: str
) -> None:
    etag = service.upload(f"eileen/{name}.jpg", bad_photos[name])
    before = service.gallery_state()
    reply = reply_of(service.created(f"eileen/{name}.jpg", etag))
    assert reply["type"] == FACE_REJECTED
    assert reply.get_data()["reason"] == reason
    assert service.gallery_state() == before


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/abs/1.jpg",
        "eileen/\x1b[31m.jpg",
        "eileen/" + "x" * 1000 + ".jpg",
        "no-folder.jpg",
    ],
    ids=["dotdot", "absolute", "control", "1kb-name", "no-identity"],
)
def test_hostile_keys_are_rejected_with_a_reason(service: EnrollService, key: str) -> None:
    before = service.gallery_state()
    reply = reply_of(service.created(key, "etag"))
    assert reply["type"] == FACE_REJECTED
    assert reply.get_data()["reason"] in ("invalid_key", "invalid_identity")
    assert service.gallery_state() == before


def test_a_photo_replaced_by_a_broken_one_is_unenrolled(
    service: EnrollService, photo: bytes, bad_photos: dict[str, bytes]
) -> None:
    reply_of(service.created("eileen/1.jpg", service.upload("eileen/1.jpg", photo)))
    broken = service.upload("eileen/1.jpg", bad_photos["truncated"])
    assert reply_of(service.created("eileen/1.jpg", broken))["type"] == FACE_REJECTED
    assert service.gallery.identities() == {}


def test_small_faces_are_rejected_as_too_small(store: ObjectStore, tmp_path: Path) -> None:
    from skimage import data as skdata

    small = cv2.resize(skdata.astronaut(), (300, 300), interpolation=cv2.INTER_AREA)  # face ~55px
    for service in make_service(store, tmp_path, min_face_size=80):
        reply = reply_of(
            service.created("eileen/1.png", service.upload("eileen/1.png", encode(small)))
        )
        assert reply.get_data()["reason"] == "face_too_small"


def test_requests_that_are_not_cloudevents_get_400(service: EnrollService) -> None:
    response = requests.post(
        service.url, data=b"{}", headers={"content-type": "application/json"}, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_event"
    assert requests.get(service.url + "/healthz", timeout=10).status_code == 200


def test_other_event_types_and_buckets_are_acknowledged_and_ignored(service: EnrollService) -> None:
    other_bucket = object_event(
        "created", SOURCE, ObjectChangeData("elsewhere", "a/b.jpg", etag="x")
    )
    assert service.send(other_bucket).status_code == 202
    unrelated = CloudEvent({"type": "dev.example.other", "source": "/x", "id": "1"}, {"a": 1})
    assert service.send(unrelated).status_code == 202


def test_store_outage_answers_503_so_the_broker_retries(tmp_path: Path) -> None:
    dead = S3Store("http://127.0.0.1:9", "facerank-test", "facerank-test-secret")
    config = Settings(data_dir=tmp_path)
    handler = build_handler(config, dead)
    with serving(create_app(handler, api_token="")) as url:
        event = object_event("created", SOURCE, ObjectChangeData("faces", "eileen/1.jpg", etag="x"))
        headers, body = to_binary(event)
        response = requests.post(url, data=body, headers=headers, timeout=60)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"
