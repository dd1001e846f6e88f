"""The notify function: face.identified events matching the filter become webhook POSTs.

The webhook is a real HTTP server on a loopback port, the function its real Flask app, the
ledger of notified events a real store (the folder store, and moto's S3 server where several
instances share it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cloudevents.http import CloudEvent
from flask import Flask

from facerank.cehttp import to_binary
from facerank.events import FACE_ENROLLED, FACE_IDENTIFIED
from facerank.storage import FolderStore, ObjectStore
from functions.notify.app import create_app
from functions.notify.handler import NotifyFilter, NotifyHandler
from functions.notify.ledger import LEASE, PREFIX, Clock, NotifyLedger
from tests.plugins.webhook import Webhook


@pytest.fixture
def ledger(tmp_path: Path) -> NotifyLedger:
    store = FolderStore(tmp_path / "buckets")
    store.ensure_bucket("gallery")
    return NotifyLedger(store, "gallery")


def instance(store: ObjectStore, url: str, *, clock: Clock | None = None) -> Flask:
    """One notify replica: its own handler and ledger over the shared store."""
    ledger = NotifyLedger(store, "gallery", clock=clock or (lambda: datetime.now(UTC)))
    return create_app(NotifyHandler(url, NotifyFilter.parse("*"), ledger), api_token="")


def identified(identities: list[str], unknown: int = 0, event_id: str = "e1") -> CloudEvent:
    faces = [
        {
            "box": [10, 20, 100, 100],
            "confidence": 0.9,
            "identity": name,
            "distance": 0.31,
            "match": True,
            "matches": [{"identity": name, "distance": 0.31, "face_id": "f", "match": True}],
        }
        for name in identities
    ] + [
        {
            "box": [200, 20, 90, 90],
            "confidence": 0.8,
            "identity": None,
            "distance": 0.9,
            "match": False,
            "matches": [],
        }
    ] * unknown
    data = {
        "bucket": "queries",
        "key": "party/1.jpg",
        "etag": "abc",
        "model_version": "lbp-v0",
        "identities": identities,
        "unknown_faces": unknown,
        "faces": faces,
        "result_key": "results/party/1.jpg.json",
    }
    attributes = {"type": FACE_IDENTIFIED, "source": "facerank/identify", "id": event_id}
    return CloudEvent(attributes, data)


def post(app: Flask, event: CloudEvent) -> int:
    headers, body = to_binary(event)
    return app.test_client().post("/", headers=headers, data=body).status_code


@pytest.mark.parametrize(
    ("text", "identities", "unknown", "expected"),
    [
        ("unknown", ["alice"], 0, []),
        ("unknown", ["alice"], 2, ["unknown"]),
        ("alice,unknown", ["alice", "bob"], 1, ["alice", "unknown"]),
        (" bob ", ["alice", "bob"], 0, ["bob"]),
        ("*", [], 1, ["unknown"]),
        ("*", ["carol"], 0, ["carol"]),
        ("", ["alice"], 1, []),
    ],
)
def test_the_filter_names_identities_or_unknown_faces(
    text: str, identities: list[str], unknown: int, expected: list[str]
) -> None:
    data = {"identities": identities, "unknown_faces": unknown}
    assert NotifyFilter.parse(text).reasons(data) == expected


def test_a_matching_event_is_posted_as_chat_text_without_pixels_or_vectors(
    webhook: Webhook, ledger: NotifyLedger
) -> None:
    hook, url = webhook, webhook.url
    app = create_app(NotifyHandler(url, NotifyFilter.parse("alice,unknown"), ledger), api_token="")
    assert post(app, identified(["alice"], unknown=1)) == 202
    [body] = hook.bodies
    assert body["text"] == "facerank: alice (0.31), 1 unknown face in queries/party/1.jpg"
    summary = body["facerank"]
    assert summary["event_id"] == "e1"
    assert summary["identities"] == ["alice"]
    assert summary["unknown_faces"] == 1
    assert summary["result_key"] == "results/party/1.jpg.json"
    assert [set(f) for f in summary["faces"]] == [{"identity", "distance", "box"}] * 2
    # No image, no embedding: nothing long, no base64, no vector anywhere in the body.
    assert len(hook.raw[0]) < 1000
    assert not any(k in hook.raw[0].decode() for k in ("b64", "embedding", "vector", "crop"))


def test_events_outside_the_filter_and_other_types_post_nothing(
    webhook: Webhook, ledger: NotifyLedger
) -> None:
    hook, url = webhook, webhook.url
    app = create_app(NotifyHandler(url, NotifyFilter.parse("alice"), ledger), api_token="")
    assert post(app, identified(["bob"], unknown=3)) == 202
    enrolled = CloudEvent({"type": FACE_ENROLLED, "source": "s", "id": "x"}, {"identity": "alice"})
    assert post(app, enrolled) == 202
    assert hook.bodies == []


def test_a_redelivered_event_is_posted_once(webhook: Webhook, ledger: NotifyLedger) -> None:
    hook, url = webhook, webhook.url
    app = create_app(NotifyHandler(url, NotifyFilter.parse("*"), ledger), api_token="")
    assert post(app, identified(["alice"], event_id="same")) == 202
    assert post(app, identified(["alice"], event_id="same")) == 202
    assert post(app, identified(["alice"], event_id="other")) == 202
    assert [b["facerank"]["event_id"] for b in hook.bodies] == ["same", "other"]


@pytest.mark.parametrize(("status", "answer"), [(500, 503), (429, 503), (404, 400), (400, 400)])
def test_webhook_failures_are_retried_by_the_broker_and_refusals_dead_lettered(
    webhook: Webhook, ledger: NotifyLedger, status: int, answer: int
) -> None:
    """503 is what the broker retries (then dead-letters); 400 it dead-letters at once."""
    hook, url = webhook, webhook.url
    app = create_app(NotifyHandler(url, NotifyFilter.parse("*"), ledger), api_token="")
    hook.status = status
    assert post(app, identified(["alice"])) == answer
    hook.status = 200
    assert post(app, identified(["alice"])) == 202  # not remembered as posted: sent now
    assert len(hook.bodies) == 1


def test_an_unreachable_webhook_is_retryable_and_its_url_never_echoed(
    ledger: NotifyLedger,
    free_port: Callable[[], int],
) -> None:
    secret_url = f"http://127.0.0.1:{free_port()}/services/T000/B000/secret-token"
    app = create_app(NotifyHandler(secret_url, NotifyFilter.parse("*"), ledger), api_token="")
    headers, body = to_binary(identified(["alice"]))
    response = app.test_client().post("/", headers=headers, data=body)
    assert response.status_code == 503
    assert response.json["error"]["code"] == "webhook_unavailable"
    assert "secret-token" not in json.dumps(response.json)


def test_without_a_webhook_nothing_is_posted_and_nothing_fails(ledger: NotifyLedger) -> None:
    app = create_app(NotifyHandler("", NotifyFilter.parse("*"), ledger), api_token="")
    assert post(app, identified(["alice"])) == 202


@pytest.mark.parametrize("backend", ["folder", "s3"])
def test_replicas_and_restarts_post_a_redelivered_event_once(
    webhook: Webhook, backend: str, request: pytest.FixtureRequest
) -> None:
    """Each delivery goes to another replica, the last to one started after the others."""
    store: ObjectStore = request.getfixturevalue(f"{backend}_store")
    store.ensure_bucket("gallery")
    first, second = instance(store, webhook.url), instance(store, webhook.url)
    assert post(first, identified(["alice"], event_id="same")) == 202
    assert post(second, identified(["alice"], event_id="same")) == 202
    restarted = instance(store, webhook.url)
    assert post(restarted, identified(["alice"], event_id="same")) == 202
    assert post(second, identified(["alice"], event_id="other")) == 202
    assert [b["facerank"]["event_id"] for b in webhook.bodies] == ["same", "other"]
    markers = [info.key for info in store.list("gallery", PREFIX)]
    assert len(markers) == 2
    assert not any("same" in key or "other" in key for key in markers)  # hashed ids


def test_a_delivery_while_another_posts_is_retried_and_then_answered_posted(
    webhook: Webhook, s3_store: ObjectStore
) -> None:
    s3_store.ensure_bucket("gallery")
    first, second = instance(s3_store, webhook.url), instance(s3_store, webhook.url)
    webhook.hold = threading.Event()
    answers: list[int] = []
    posting = threading.Thread(target=lambda: answers.append(post(first, identified(["a"]))))
    posting.start()
    try:
        assert webhook.holding.wait(30)  # the first replica is inside its POST
        headers, body = to_binary(identified(["a"]))
        response = second.test_client().post("/", headers=headers, data=body)
        assert response.status_code == 503  # the broker retries it
        assert response.json["error"]["code"] == "notification_in_progress"
    finally:
        webhook.hold.set()
        posting.join(30)
    assert answers == [202]
    assert post(second, identified(["a"])) == 202  # the broker's retry: already posted
    assert len(webhook.bodies) == 1


def test_a_claim_whose_holder_died_is_taken_over_once_its_lease_ran_out(
    webhook: Webhook, folder_store: FolderStore
) -> None:
    """A replica that died mid-post leaves a claim; the broker's retries post once it expired."""
    folder_store.ensure_bucket("gallery")
    assert NotifyLedger(folder_store, "gallery").claim("e1") is not None  # then it died
    now = datetime.now(UTC)
    assert post(instance(folder_store, webhook.url, clock=lambda: now), identified(["a"])) == 503
    later = now + LEASE + LEASE
    assert post(instance(folder_store, webhook.url, clock=lambda: later), identified(["a"])) == 202
    assert post(instance(folder_store, webhook.url), identified(["a"])) == 202
    assert len(webhook.bodies) == 1
