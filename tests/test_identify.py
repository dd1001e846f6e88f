"""The identify function: query photos ranked by the real predictor, results beside the photos.

The predictor is KServe's real ModelServer in its own process over a gallery enrolled by the
real enroll handler; the handler runs in-process so a test can count what it asks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest

from facerank.cehttp import json_data, to_binary
from facerank.events import (
    FACE_IDENTIFIED,
    FACE_REJECTED,
    OBJECT_CREATED,
    OBJECT_DELETED,
    ObjectChangeData,
    object_event,
)
from facerank.gallery import Gallery
from facerank.ports import reserved_ports
from facerank.predictor import PredictorUnauthorizedError, PredictorUnavailableError
from facerank.queries import QueryResults, result_key
from facerank.settings import Settings
from facerank.storage import FolderStore
from facerank.supervisor import Component, Supervisor
from facerank.unknown import UnknownFaces
from functions.identify.app import create_app
from functions.identify.handler import IdentifyHandler, build_handler
from functions.source.emitter import Emitter, Outcome
from functions.source.reconcile import Reconciler
from tests.plugins.enroller import Enroller, lfw_photo
from tests.plugins.faces import encode, variant
from tests.plugins.http import serving
from tests.plugins.sink import EventSink

SOURCE = "file:///test/queries"


@dataclass
class World:
    settings: Settings
    store: FolderStore


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, lfw_faces: np.ndarray
) -> Iterator[World]:
    """A gallery of the astronaut and three LFW faces, and a predictor serving it."""
    data_dir = tmp_path_factory.mktemp("identify")
    enroller = Enroller(Settings(data_dir=data_dir))
    enroller.add("eileen/1.jpg", astronaut)
    for identity, index in (("lfw-0", 0), ("lfw-1", 1), ("lfw-3", 3)):
        enroller.add(f"{identity}/1.jpg", lfw_photo(lfw_faces, index))
    with reserved_ports(2) as [port, grpc_port]:
        predictor = Component("predictor", "inference", port, health_path="/v1/models/facerank")
        env = {"FACERANK_DATA_DIR": str(data_dir), "FACERANK_PREDICTOR_GRPC_PORT": str(grpc_port)}
        with Supervisor([predictor], env=env) as supervisor:
            supervisor.start()
            settings = Settings(data_dir=data_dir, predictor_url=predictor.url)
            store = FolderStore(settings.buckets_dir)
            store.ensure_bucket(settings.queries_bucket)
            yield World(settings, store)


class Counting:
    """The handler's predictor call, counted: redeliveries must not ask again."""

    def __init__(self, handler: IdentifyHandler) -> None:
        self.calls = 0
        self._inner = handler.predict
        handler.predict = self

    def __call__(self, photo: bytes) -> dict[str, Any]:
        self.calls += 1
        return self._inner(photo)


@pytest.fixture
def handler(world: World) -> IdentifyHandler:
    return build_handler(world.settings, world.store)


def drop(world: World, key: str, data: bytes) -> Any:
    """Put a photo into the queries bucket; its object.created event."""
    etag = world.store.put(world.settings.queries_bucket, key, data).etag
    return object_event("created", SOURCE, ObjectChangeData("queries", key, etag=etag))


def another_shot(astronaut: np.ndarray) -> bytes:
    crop = astronaut[10:400, 60:460]
    return encode(variant(cv2.resize(crop, (640, 480)), np.random.default_rng(7)), "JPEG")


def test_an_enrolled_face_is_identified_and_the_result_written_beside_the_photo(
    world: World, handler: IdentifyHandler, astronaut: np.ndarray
) -> None:
    event = drop(world, "party/one.jpg", another_shot(astronaut))
    outcome = handler.handle(event)
    assert outcome.verdict == "identified", outcome.reason
    assert outcome.reply is not None
    assert outcome.reply["type"] == FACE_IDENTIFIED
    assert outcome.reply["subject"] == "party/one.jpg"
    data = json_data(outcome.reply)
    assert data["identities"] == ["eileen"]
    assert data["unknown_faces"] == 0
    assert data["model_version"] == "lbp-v0"
    assert data["result_key"] == "results/party/one.jpg.json"
    [face] = data["faces"]
    assert face["identity"] == "eileen"
    assert face["match"] is True
    assert face["distance"] == face["matches"][0]["distance"]
    assert len(face["matches"]) == 3
    stored = json.loads(world.store.get("queries", "results/party/one.jpg.json").data)
    assert stored["etag"] == data["etag"] == world.store.stat("queries", "party/one.jpg").etag
    assert stored["faces"] == data["faces"]


def test_a_face_nobody_enrolled_is_reported_unknown(
    world: World, handler: IdentifyHandler, lfw_faces: np.ndarray
) -> None:
    outcome = handler.handle(drop(world, "stranger.jpg", encode(lfw_photo(lfw_faces, 10), "JPEG")))
    assert outcome.verdict == "identified", outcome.reason
    data = json_data(outcome.reply)
    assert data["identities"] == []
    assert data["unknown_faces"] == 1
    assert data["faces"][0]["identity"] is None
    assert data["faces"][0]["match"] is False
    # Kept for grouping: its crop, its embedding by the served version, its source photo.
    unknown_id = data["faces"][0]["unknown_id"]
    kept = UnknownFaces(world.store, "gallery").groups().faces[unknown_id]
    assert (kept.bucket, kept.key, kept.etag) == ("queries", "stranger.jpg", data["etag"])
    assert kept.model_versions == ("lbp-v0",)
    assert world.store.exists("gallery", f"unknown/faces/{unknown_id}/crop.png")
    assert world.store.exists("gallery", f"unknown/faces/{unknown_id}/lbp-v0.f32")


def test_deleting_a_photo_forgets_its_unknown_faces(
    world: World, handler: IdentifyHandler, lfw_faces: np.ndarray
) -> None:
    outcome = handler.handle(drop(world, "brief.jpg", encode(lfw_photo(lfw_faces, 5), "JPEG")))
    unknown_id = json_data(outcome.reply)["faces"][0]["unknown_id"]
    unknown = UnknownFaces(world.store, "gallery")
    assert unknown_id in unknown.groups().faces
    world.store.delete("queries", "brief.jpg")
    deleted = object_event("deleted", SOURCE, ObjectChangeData("queries", "brief.jpg"))
    assert handler.handle(deleted).verdict == "removed"
    assert unknown_id not in unknown.groups().faces
    assert not list(world.store.list("gallery", f"unknown/faces/{unknown_id}/"))


def test_redelivery_asks_nothing_writes_nothing_and_replies_the_same(
    world: World, handler: IdentifyHandler, astronaut: np.ndarray
) -> None:
    counting = Counting(handler)
    event = drop(world, "again.jpg", another_shot(astronaut))
    first = handler.handle(event)
    written = world.store.stat("queries", result_key("again.jpg"))
    second = handler.handle(event)
    assert counting.calls == 1
    assert second.verdict == "identified"
    assert second.reason == "already identified"
    assert first.reply is not None
    assert second.reply is not None
    assert second.reply["id"] == first.reply["id"]
    assert json_data(second.reply) == json_data(first.reply)
    assert world.store.stat("queries", result_key("again.jpg")) == written


def test_a_replaced_photo_gets_a_new_result_and_its_old_event_is_stale(
    world: World, handler: IdentifyHandler, astronaut: np.ndarray, lfw_faces: np.ndarray
) -> None:
    old = drop(world, "replaced.jpg", another_shot(astronaut))
    assert handler.handle(old).verdict == "identified"
    new = drop(world, "replaced.jpg", encode(lfw_photo(lfw_faces, 1), "JPEG"))
    assert handler.handle(old).verdict == "skipped"
    outcome = handler.handle(new)
    assert json_data(outcome.reply)["identities"] == ["lfw-1"]
    result = QueryResults(world.store, "queries").read("replaced.jpg")
    assert result is not None
    assert result.result is not None
    assert result.result.etag == world.store.stat("queries", "replaced.jpg").etag


@pytest.mark.parametrize(
    ("photo", "code"),
    [
        (b"this is no photo", "not_an_image"),
        (encode(np.full((240, 320, 3), 90, np.uint8), "JPEG"), "no_face"),
        (encode(np.full((240, 320, 3), 90, np.uint8), "JPEG")[:300], "truncated_image"),
    ],
)
def test_bad_input_gets_enrollments_refusals_and_a_result_saying_why(
    world: World, handler: IdentifyHandler, photo: bytes, code: str
) -> None:
    counting = Counting(handler)
    key = f"bad/{code}.jpg"
    event = drop(world, key, photo)
    outcome = handler.handle(event)
    assert outcome.verdict == "rejected"
    assert outcome.reply is not None
    assert outcome.reply["type"] == FACE_REJECTED
    reply = json_data(outcome.reply)
    assert reply["reason"] == code
    assert reply["bucket"] == "queries"
    assert reply["key"] == key
    stored = json.loads(world.store.get("queries", result_key(key)).data)
    assert stored["error"]["code"] == code
    asked = counting.calls
    again = handler.handle(event)
    assert again.reply is not None
    assert json_data(again.reply)["reason"] == code
    assert counting.calls == asked  # answered from the stored result


def test_deleting_a_photo_deletes_its_result(
    world: World, handler: IdentifyHandler, astronaut: np.ndarray
) -> None:
    assert handler.handle(drop(world, "gone.jpg", another_shot(astronaut))).verdict == "identified"
    world.store.delete("queries", "gone.jpg")
    deleted = object_event("deleted", SOURCE, ObjectChangeData("queries", "gone.jpg"))
    assert handler.handle(deleted).verdict == "removed"
    assert not world.store.exists("queries", result_key("gone.jpg"))
    assert handler.handle(deleted).verdict == "skipped"


def test_results_and_other_buckets_are_not_photos_to_identify(
    world: World, handler: IdentifyHandler, astronaut: np.ndarray
) -> None:
    result = object_event(
        "created", SOURCE, ObjectChangeData("queries", "results/x.jpg.json", etag="1")
    )
    assert handler.handle(result).verdict == "skipped"
    faces = object_event("created", SOURCE, ObjectChangeData("faces", "a/b.jpg", etag="1"))
    assert handler.handle(faces).verdict == "skipped"
    emitter = Emitter("http://127.0.0.1:1/", world.settings)
    assert emitter.screen("queries", "results/x.jpg.json") is Outcome.IGNORED
    assert emitter.screen("queries", "x.jpg") is None
    assert emitter.screen("faces", "results/x.jpg") is None


def test_an_unreachable_predictor_is_a_503_so_the_broker_retries(
    world: World, astronaut: np.ndarray, free_port: Callable[[], int]
) -> None:
    settings = world.settings.replace(predictor_url=f"http://127.0.0.1:{free_port()}")
    handler = build_handler(settings, world.store)
    event = drop(world, "later.jpg", another_shot(astronaut))
    with pytest.raises(PredictorUnavailableError):
        handler.handle(event)
    assert not world.store.exists("queries", result_key("later.jpg"))
    headers, body = to_binary(event)
    response = create_app(handler, api_token="").test_client().post("/", headers=headers, data=body)
    assert response.status_code == 503
    assert response.json["error"]["code"] == "predictor_unavailable"


def test_the_source_reconciles_the_queries_bucket_against_its_results(
    world: World, handler: IdentifyHandler, astronaut: np.ndarray, event_sink: EventSink
) -> None:
    """Photos without a result of their version are sent, results without a photo too."""
    settings = world.settings.replace(queries_bucket="queries-reconciled")
    store = world.store
    store.ensure_bucket(settings.queries_bucket)
    own = build_handler(settings, store)
    own.predict = handler.predict
    done = store.put(settings.queries_bucket, "done.jpg", another_shot(astronaut)).etag
    own.handle(
        object_event("created", SOURCE, ObjectChangeData(settings.queries_bucket, "done.jpg", done))
    )
    fresh = store.put(settings.queries_bucket, "new.jpg", another_shot(astronaut)[:-10]).etag
    store.put(settings.queries_bucket, "left.jpg", b"x")
    own.handle(
        object_event(
            "created", SOURCE, ObjectChangeData(settings.queries_bucket, "left.jpg", etag="")
        )
    )
    store.delete(settings.queries_bucket, "left.jpg")
    results = QueryResults(store, settings.queries_bucket)
    emitter = Emitter(event_sink.url, settings)
    report = Reconciler(
        store,
        Gallery(store, settings.gallery_bucket),
        emitter,
        bucket=settings.queries_bucket,
        processed=results.processed,
    ).run_once()
    assert (report.created, report.deleted, report.errors) == (1, 1, 0)
    events = event_sink.wait_for(2)
    seen = {(e["type"], e["subject"], e["bucket"]) for e in events}
    assert seen == {
        (OBJECT_CREATED, "new.jpg", settings.queries_bucket),
        (OBJECT_DELETED, "left.jpg", settings.queries_bucket),
    }
    assert json_data(next(e for e in events if e["subject"] == "new.jpg"))["etag"] == fresh


def test_the_predictor_token_is_presented_though_the_function_takes_none(
    world: World, astronaut: np.ndarray
) -> None:
    """In a cluster identify takes events without a token (from the Broker) yet must present
    one to the guarded predictor: ``FACERANK_PREDICTOR_API_TOKEN`` alone is enough."""
    token = "predictor-token-for-identify-0123"
    seen: list[str] = []

    def guarded(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ.get("HTTP_AUTHORIZATION", ""))
        start_response("401 Unauthorized", [("Content-Type", "application/json")])
        return [b'{"error": "no valid API token"}']

    with serving(guarded) as url:
        settings = world.settings.replace(predictor_url=url, predictor_api_token=token)
        handler = build_handler(settings, world.store)
        with pytest.raises(PredictorUnauthorizedError):
            handler.handle(drop(world, "guarded.jpg", another_shot(astronaut)))
    assert seen == [f"Bearer {token}"]
    # A refused token is the function's misconfiguration, not the photo's fault: retried by
    # the broker, and no result blames the photo.
    assert not world.store.exists("queries", result_key("guarded.jpg"))
