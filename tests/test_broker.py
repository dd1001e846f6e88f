"""The local broker over real HTTP: real CloudEvents in, real subscriber apps out.

Every server here (the broker's waitress app, each subscriber) listens on its own loopback
port in this process; ``python -m facerank.broker`` runs once as a real process. Manifests are
written per test with delays of tens of milliseconds, so retry schedules stay observable
without slowing the suite; every wait polls against a deadline.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http
from flask import Flask, Response, request
from prometheus_client.parser import text_string_to_metric_families
from waitress import wasyncore
from waitress.server import create_server

from facerank.broker import LocalBroker, create_app
from facerank.broker.spool import Envelope, Spool
from facerank.broker.subscribers import SUBSCRIBERS_ENV, parse_subscribers
from facerank.cehttp import from_http as codec_from_http
from facerank.cehttp import to_document
from facerank.errors import ConfigError
from facerank.events import (
    FACE_ENROLLED,
    FACE_REJECTED,
    OBJECT_CREATED,
    ObjectChangeData,
    object_event,
    reply_event,
)
from facerank.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
    return result


@contextmanager
def serving(app: Flask, port: int = 0) -> Iterator[str]:
    """``app`` under waitress on a loopback port, in a thread; yields its base URL."""
    sockets: dict[int, Any] = {}
    server = create_server(app, map=sockets, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:  # close every socket from inside the loop, keep-alive connections included
        server.trigger.pull_trigger(lambda: wasyncore.close_all(sockets))
        thread.join(5)
        server.task_dispatcher.shutdown()


# --- subscribers -------------------------------------------------------------------------

Answer = Callable[[int, CloudEvent], Response]
"""What a subscriber answers to its n-th call (1-based) carrying this event."""


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> CloudEvent:
        return from_http(self.headers, self.body)


@dataclass
class Subscriber:
    url: str
    calls: list[Call] = field(default_factory=list)

    def ids(self) -> list[str]:
        return [call.event["id"] for call in self.calls]


def statuses(*codes: int) -> Answer:
    """Answer these statuses in turn, then the last one forever."""
    return lambda n, _event: Response(status=codes[min(n, len(codes)) - 1])


def accept(_n: int, _event: CloudEvent) -> Response:
    return Response(status=200)


StartSubscriber = Callable[..., Subscriber]
"""``start_subscriber(answer=accept, port=0)``."""


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def start_subscriber(stack: ExitStack) -> StartSubscriber:
    def start(answer: Answer = accept, port: int = 0) -> Subscriber:
        app = Flask("subscriber")
        subscriber = Subscriber(url="")
        lock = threading.Lock()

        @app.post("/")
        def receive() -> Response:
            call = Call(dict(request.headers), request.get_data(), time.monotonic())
            with lock:
                subscriber.calls.append(call)
                n = len(subscriber.calls)
            return answer(n, call.event)

        subscriber.url = stack.enter_context(serving(app, port))
        return subscriber

    return start


# --- the broker --------------------------------------------------------------------------


def trigger(name: str, type_: str, subscriber: str) -> dict[str, Any]:
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {
            "broker": "test",
            "filter": {"attributes": {"type": type_}},
            "subscriber": {
                "ref": {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "name": subscriber,
                }
            },
        },
    }


def write_manifests(folder: Path, **delivery: Any) -> None:
    """A Broker ``test`` with ``delivery`` and two Triggers: object.created -> ``sub-a``,
    face.enrolled -> ``sub-b`` (the reply enroll sends)."""
    broker = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "test"},
        "spec": {"delivery": {"timeout": "PT2S", **delivery}},
    }
    documents = [
        broker,
        trigger("created-to-a", OBJECT_CREATED, "sub-a"),
        trigger("enrolled-to-b", FACE_ENROLLED, "sub-b"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eventing.yaml").write_text(yaml.safe_dump_all(documents), encoding="utf-8")


@dataclass
class RunningBroker:
    url: str
    broker: LocalBroker
    state: Path
    stop: Callable[[], None]

    def queue_file(self, trigger: str, event_id: str) -> Path:
        return self.state / "queue" / trigger / f"{event_id}.json"

    def dead_letter(self, trigger: str, event_id: str) -> dict[str, Any]:
        path = self.state / "dead-letter" / trigger / f"{event_id}.json"
        wait_for(path.exists, f"dead letter {path.name}")
        return json.loads(path.read_text(encoding="utf-8"))

    def queue_is_empty(self) -> bool:
        return not list((self.state / "queue").glob("*/*.json"))

    def metric(self, name: str, trigger: str | None = None) -> float:
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels.get("trigger") == trigger:
                    return sample.value
        raise AssertionError(f"no sample {name}{{trigger={trigger}}} in /metrics")

    def wait_count(self, outcome: str, trigger: str, value: float) -> None:
        """Counters move after the files do: poll rather than race them."""
        name = f"facerank_broker_events_{outcome}_total"
        wait_for(lambda: self.metric(name, trigger) == value, f"{name}{{{trigger}}} == {value}")


StartBroker = Callable[..., RunningBroker]
"""``start_broker(subscribers, **delivery)``: name -> URL, then ``spec.delivery`` fields."""


@pytest.fixture
def start_broker(tmp_path: Path, stack: ExitStack) -> StartBroker:
    """Start the broker of ``tmp_path`` (same data dir each time, so restarts find the queue)."""

    def start(subscribers: dict[str, str], **delivery: Any) -> RunningBroker:
        write_manifests(tmp_path / "eventing", **delivery)
        settings = Settings.from_env(
            {}, data_dir=tmp_path / "data", eventing_dir=tmp_path / "eventing"
        )
        urls = ",".join(f"{k}={v}" for k, v in subscribers.items())
        broker = LocalBroker.from_settings(settings.replace(broker_subscribers=urls))
        broker.start()
        inner = ExitStack()
        inner.callback(broker.stop, grace=2.0)
        url = inner.enter_context(serving(create_app(broker)))
        stack.callback(inner.close)
        return RunningBroker(url, broker, tmp_path / "data" / "broker", inner.close)

    return start


def created(key: str = "alice/1.jpg", etag: str = "e1") -> CloudEvent:
    return object_event("created", "file:///faces", ObjectChangeData("faces", key, etag=etag))


def inside(event: CloudEvent) -> CloudEvent:
    """``event`` as the broker holds events: parsed off the wire, data as raw bytes."""
    return codec_from_http(*to_binary(event))


def post(url: str, event: CloudEvent, mode: str = "binary") -> requests.Response:
    headers, body = (to_binary if mode == "binary" else to_structured)(event)
    return requests.post(url, data=body, headers=headers, timeout=5)


FAST = {"retry": 2, "backoffPolicy": "exponential", "backoffDelay": "PT0.05S"}


# --- routing -----------------------------------------------------------------------------


def test_routes_by_filter_in_both_modes(
    start_broker: StartBroker, start_subscriber: StartSubscriber
) -> None:
    a, b = start_subscriber(), start_subscriber()
    broker = start_broker({"sub-a": a.url, "sub-b": b.url}, **FAST)
    binary, structured = created("alice/1.jpg"), created("bob/2.jpg")
    text = CloudEvent(
        {"type": OBJECT_CREATED, "source": "test", "id": "t1", "datacontenttype": "text/plain"},
        "hello",
    )
    unmatched = CloudEvent({"type": FACE_REJECTED, "source": "test", "id": "r1"}, {"reason": "x"})

    for event, mode in [(binary, "binary"), (structured, "structured"), (text, "structured")]:
        assert post(broker.url, event, mode).status_code == 202
    response = post(broker.url, unmatched)
    assert (response.status_code, response.content) == (202, b"")

    wait_for(lambda: len(a.calls) == 3, "three deliveries to A")
    by_id = {call.event["id"]: call for call in a.calls}
    assert by_id[binary["id"]].body == to_binary(binary)[1], "binary data is forwarded as is"
    assert by_id[binary["id"]].headers["Ce-Subject"] == "alice/1.jpg"
    assert json.loads(by_id[structured["id"]].body) == structured.get_data()
    assert by_id["t1"].body == b"hello", "text data is not re-encoded as a JSON string"
    assert by_id["t1"].headers["Content-Type"] == "text/plain"
    broker.wait_count("delivered", "created-to-a", 3)
    assert broker.queue_is_empty()
    assert b.calls == []
    assert broker.metric("facerank_broker_events_dropped_total") == 1
    assert broker.metric("facerank_broker_events_accepted_total", "created-to-a") == 3
    assert broker.metric("facerank_broker_events_delivered_total", "enrolled-to-b") == 0


def test_accepted_only_once_queued(
    start_broker: StartBroker, start_subscriber: StartSubscriber
) -> None:
    gate = threading.Event()

    def held(_n: int, _event: CloudEvent) -> Response:
        gate.wait(5)
        return Response(status=200)

    a = start_subscriber(held)
    broker = start_broker({"sub-a": a.url, "sub-b": a.url}, **FAST)
    event = created()
    assert post(broker.url, event).status_code == 202
    queued = broker.queue_file("created-to-a", event["id"])
    assert queued.is_file(), "the 202 came before the event was on disk"
    assert json.loads(queued.read_text())["event"]["subject"] == "alice/1.jpg"
    gate.set()
    wait_for(lambda: not queued.exists(), "the queue file to go after delivery")
    assert len(a.calls) == 1


def test_unwritable_queue_is_a_503_not_a_202(
    start_broker: StartBroker, start_subscriber: StartSubscriber
) -> None:
    a = start_subscriber()
    broker = start_broker({"sub-a": a.url, "sub-b": a.url}, **FAST)
    (broker.state / "queue").mkdir(parents=True)
    (broker.state / "queue" / "created-to-a").write_text("a file where a folder must be")
    response = post(broker.url, created())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_unavailable"


# --- retries and dead letters ------------------------------------------------------------


@pytest.mark.parametrize("failure", [503, 404, 429])
def test_retries_with_backoff_then_success(
    start_broker: StartBroker, start_subscriber: StartSubscriber, failure: int
) -> None:
    a = start_subscriber(statuses(failure, failure, 200))
    broker = start_broker({"sub-a": a.url, "sub-b": a.url}, **FAST)
    event = created()
    assert post(broker.url, event).status_code == 202
    wait_for(
        lambda: broker.metric("facerank_broker_events_delivered_total", "created-to-a"), "delivery"
    )
    assert len(a.calls) == 3
    gaps = [later.at - earlier.at for earlier, later in zip(a.calls, a.calls[1:], strict=False)]
    assert gaps[0] >= 0.045, f"first retry after 0.05 s, got {gaps}"
    assert gaps[1] >= 0.095, f"second retry after 0.1 s (exponential), got {gaps}"
    assert broker.metric("facerank_broker_events_retried_total", "created-to-a") == 2
    assert broker.queue_is_empty()
    assert not (broker.state / "dead-letter").exists()


@pytest.mark.parametrize("final", [400, 422])
def test_final_4xx_dead_letters_at_once(
    start_broker: StartBroker, start_subscriber: StartSubscriber, final: int
) -> None:
    a = start_subscriber(statuses(final))
    broker = start_broker({"sub-a": a.url, "sub-b": a.url}, **FAST)
    event = created()
    post(broker.url, event)
    record = broker.dead_letter("created-to-a", event["id"])
    assert len(a.calls) == 1
    assert (record["attempts"], record["last_status"], record["reason"]) == (
        1,
        final,
        "not retryable",
    )
    assert record["event"]["id"] == event["id"]
    assert record["event"]["data"] == event.get_data()
    assert record["dead_letter_sink"] == ""
    broker.wait_count("dead_lettered", "created-to-a", 1)
    assert broker.queue_is_empty()


def test_exhausted_retries_dead_letter(
    start_broker: StartBroker, start_subscriber: StartSubscriber
) -> None:
    a = start_subscriber(statuses(500))
    broker = start_broker({"sub-a": a.url, "sub-b": a.url}, **{**FAST, "backoffPolicy": "linear"})
    event = created()
    post(broker.url, event)
    record = broker.dead_letter("created-to-a", event["id"])
    assert len(a.calls) == 3, "one try and two retries"
    assert record["attempts"] == 3
    assert (record["last_status"], record["last_error"]) == (500, "HTTP 500")
    assert record["reason"] == "retries exhausted"
    assert [h["status"] for h in record["history"]] == [500, 500, 500]
    assert record["first_attempt"] <= record["last_attempt"] <= record["dead_lettered"]
    assert record["subscriber"] == a.url
    wait_for(broker.queue_is_empty, "the queue file to go after the dead letter")


# --- replies -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_reply_events_are_routed_again(
    start_broker: StartBroker, start_subscriber: StartSubscriber, mode: str
) -> None:
    def enroll(_n: int, event: CloudEvent) -> Response:
        reply = reply_event(FACE_ENROLLED, event, {"identity": "alice"}, source="test:enroll")
        headers, body = (to_binary if mode == "binary" else to_structured)(reply)
        return Response(body, status=200, headers=headers)

    a, b = start_subscriber(enroll), start_subscriber()
    broker = start_broker({"sub-a": a.url, "sub-b": b.url}, **FAST)
    post(broker.url, created())
    wait_for(lambda: b.calls, "the reply to reach B")
    reply = b.calls[0].event
    assert (reply["type"], reply["subject"], reply.get_data()) == (
        FACE_ENROLLED,
        "alice/1.jpg",
        {"identity": "alice"},
    )
    assert len(a.calls) == 1
    wait_for(broker.queue_is_empty, "an empty queue")


def test_reply_loops_end_with_the_ttl(
    start_broker: StartBroker, start_subscriber: StartSubscriber
) -> None:
    def echo(n: int, event: CloudEvent) -> Response:
        headers, body = to_binary(created(etag=f"hop-{n}"))  # a new event A's trigger matches
        return Response(body, status=200, headers=headers)

    a = start_subscriber(echo)
    broker = start_broker({"sub-a": a.url, "sub-b": a.url}, **FAST)
    broker.broker.ingest(inside(created()), ttl=3)
    broker.wait_count("delivered", "created-to-a", 3)
    assert len(a.calls) == 3, "the third reply found its TTL used up and was dropped"
    assert broker.queue_is_empty()


def test_invalid_reply_fails_the_attempt(
    start_broker: StartBroker, start_subscriber: StartSubscriber
) -> None:
    def broken(_n: int, _event: CloudEvent) -> Response:
        return Response(b"{}", status=200, headers={"ce-specversion": "1.0", "ce-type": "x"})

    a = start_subscriber(broken)
    broker = start_broker({"sub-a": a.url, "sub-b": a.url}, **FAST)
    event = created()
    post(broker.url, event)
    record = broker.dead_letter("created-to-a", event["id"])
    assert (record["attempts"], record["last_status"]) == (3, 200)
    assert record["last_error"].startswith("invalid reply event")


# --- restarts ----------------------------------------------------------------------------


def test_queued_events_survive_a_restart(
    start_broker: StartBroker, start_subscriber: StartSubscriber, free_port: Callable[[], int]
) -> None:
    port = free_port()  # nothing listens there yet: every attempt is refused
    subscribers = {"sub-a": f"http://127.0.0.1:{port}", "sub-b": f"http://127.0.0.1:{port}"}
    delivery = {"retry": 1000, "backoffPolicy": "linear", "backoffDelay": "PT0.01S"}
    first = start_broker(subscribers, **delivery)
    event = created()
    assert post(first.url, event).status_code == 202
    queued = first.queue_file("created-to-a", event["id"])
    wait_for(lambda: len(json.loads(queued.read_text())["history"]) >= 2, "refused attempts")
    first.stop()
    tries_before = len(json.loads(queued.read_text())["history"])
    assert tries_before >= 2, "the queue file keeps its history across the stop"

    a = start_subscriber(port=port)
    second = start_broker(subscribers, **delivery)
    second.wait_count("delivered", "created-to-a", 1)
    assert second.queue_is_empty()
    assert a.ids() == [event["id"]]


def test_queued_events_of_removed_triggers_are_dead_lettered(
    tmp_path: Path, start_broker: StartBroker, start_subscriber: StartSubscriber
) -> None:
    spool = Spool(tmp_path / "data" / "broker")
    spool.put(
        Envelope(
            "removed-trigger", to_document(inside(created())), 255, "2024-01-01T00:00:00+00:00"
        )
    )
    a = start_subscriber()
    broker = start_broker({"sub-a": a.url, "sub-b": a.url}, **FAST)
    record = broker.dead_letter("removed-trigger", created()["id"])
    assert record["reason"] == "its trigger is no longer defined"
    assert (record["attempts"], record["subscriber"]) == (0, None)
    wait_for(broker.queue_is_empty, "an empty queue")
    assert a.calls == []


# --- bad requests ------------------------------------------------------------------------

VALID = {"ce-specversion": "1.0", "ce-type": OBJECT_CREATED, "ce-source": "s", "ce-id": "1"}


@pytest.mark.parametrize(
    ("method", "headers", "body", "status", "code"),
    [
        ("POST", {"content-type": "application/json"}, b'{"hello": 1}', 400, "bad_event"),
        ("POST", {"content-type": "application/cloudevents+json"}, b"{bad", 400, "bad_event"),
        ("POST", {"content-type": "application/cloudevents+json"}, b"[1]", 400, "bad_event"),
        ("POST", {**VALID, "ce-type": ""}, b"", 400, "bad_event"),
        ("POST", {**VALID, "ce-specversion": "9.9"}, b"", 400, "bad_event"),
        ("POST", {k: v for k, v in VALID.items() if k != "ce-id"}, b"", 400, "bad_event"),
        ("POST", VALID, b"x" * (1024 * 1024 + 1), 413, "request_entity_too_large"),
        ("GET", {}, b"", 405, "method_not_allowed"),
    ],
)
def test_bad_requests_are_refused_and_the_broker_stays_up(
    start_broker: StartBroker,
    start_subscriber: StartSubscriber,
    method: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = start_subscriber()
    broker = start_broker({"sub-a": a.url, "sub-b": a.url}, **FAST)
    with caplog.at_level(logging.INFO, logger="facerank.broker.app"):
        response = requests.request(
            method, broker.url, headers={**headers, "X-Request-ID": "req-7"}, data=body, timeout=5
        )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    # One line for the refusal (logged before the answer is sent), no traceback.
    [line] = [r for r in caplog.records if r.name == "facerank.broker.app"]
    assert line.getMessage().startswith(f"{method} / {status} {code} request_id=req-7: ")
    assert line.exc_info is None
    assert requests.get(f"{broker.url}/healthz", timeout=5).status_code == 200
    assert post(broker.url, created()).status_code == 202
    wait_for(lambda: a.calls, "a valid event to be delivered")


# --- configuration and the process -------------------------------------------------------


def test_unknown_subscribers_stop_the_start(tmp_path: Path) -> None:
    write_manifests(tmp_path / "eventing")
    settings = Settings.from_env({}, data_dir=tmp_path, eventing_dir=tmp_path / "eventing")
    with pytest.raises(
        ConfigError,
        match=r"sub-a \(trigger\(s\) created-to-a\), sub-b \(trigger\(s\) enrolled-to-b\)",
    ):
        LocalBroker.from_settings(settings.replace(broker_subscribers="other=http://127.0.0.1:1"))


@pytest.mark.parametrize(
    "text", ["sub-a", "sub-a=", "=http://x", "sub-a=ftp://x", "a=http://x,a=http://y"]
)
def test_subscriber_list_is_checked(text: str) -> None:
    with pytest.raises(ConfigError, match=SUBSCRIBERS_ENV):
        parse_subscribers(text)


def test_subscriber_list_parses() -> None:
    assert parse_subscribers(" a=http://127.0.0.1:1 , b=https://h/x,") == {
        "a": "http://127.0.0.1:1",
        "b": "https://h/x",
    }


def test_main_serves_and_stops_on_sigterm(
    tmp_path: Path, start_subscriber: StartSubscriber, free_port: Callable[[], int]
) -> None:
    a = start_subscriber()
    write_manifests(tmp_path / "eventing", **FAST)
    port = free_port()
    env = {
        **os.environ,
        "FACERANK_DATA_DIR": str(tmp_path / "data"),
        "FACERANK_EVENTING_DIR": str(tmp_path / "eventing"),
        "FACERANK_BROKER_PORT": str(port),
        SUBSCRIBERS_ENV: f"sub-a={a.url},sub-b={a.url}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "facerank.broker"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(url), "the broker process to listen", timeout=15)
        assert post(url, created(etag="data-only-etag")).status_code == 202
        wait_for(lambda: a.calls, "delivery through the broker process")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "broker test stopped" in stderr
    assert "delivered dev.facerank.object.created.v1" in stderr
    assert "data-only-etag" not in stderr, "event data must never be logged"


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False
