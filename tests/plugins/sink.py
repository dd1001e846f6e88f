"""A real CloudEvents sink on a loopback port, recording what it receives.

Components that post events are tested against this server rather than a mocked
``send_event``: headers, binary-mode encoding, retries and status handling all go over HTTP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from cloudevents.http import CloudEvent
from flask import Flask, request

from facerank.cehttp import from_http, json_data
from tests.plugins.http import serving

WAIT_S = 5.0
"""Bound on every wait for an event: far above the milliseconds delivery takes."""


class EventSink:
    """Records the CloudEvents POSTed to it; set ``status`` to e.g. 503 to refuse them."""

    def __init__(self) -> None:
        self.url = ""
        self.status = 202
        self.visits: list[str] = []
        """Paths (with query) of GET requests, e.g. an SNS SubscribeURL being fetched."""
        self._events: list[CloudEvent] = []
        self._refused: list[CloudEvent] = []
        self._lock = threading.Lock()

    @property
    def events(self) -> list[CloudEvent]:
        with self._lock:
            return list(self._events)

    @property
    def refused(self) -> list[CloudEvent]:
        """Events answered with ``status`` >= 300: the refusals a sender saw, observed."""
        with self._lock:
            return list(self._refused)

    def wait_for(self, count: int, timeout: float = WAIT_S) -> list[CloudEvent]:
        """The events once at least ``count`` arrived; fails the test after ``timeout``."""
        return self.wait_until(lambda events: len(events) >= count, timeout)

    def wait_until(
        self,
        condition: Callable[[list[CloudEvent]], bool],
        timeout: float = WAIT_S,
        *,
        refused: bool = False,
    ) -> list[CloudEvent]:
        """The events (or the ``refused`` ones) once ``condition`` holds for them; fails the
        test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition(events := self.refused if refused else self.events):
            assert time.monotonic() < deadline, f"condition not met by events {events}"
            time.sleep(0.02)
        return events

    def assert_quiet(self, count: int, seconds: float = 0.5) -> None:
        """Assert that no more than ``count`` events arrive within ``seconds``."""
        time.sleep(seconds)
        assert len(self.events) == count, self.events

    def reset(self) -> None:
        with self._lock:
            self._events.clear()
            self._refused.clear()
        self.visits.clear()
        self.status = 202

    def app(self) -> Flask:
        app = Flask(__name__)

        @app.post("/")
        def receive() -> tuple[str, int]:
            status = self.status
            received = from_http(request.headers, request.get_data())
            event = CloudEvent(dict(received.get_attributes()), json_data(received))
            with self._lock:
                (self._refused if status >= 300 else self._events).append(event)
            return ("refused on purpose" if status >= 300 else ""), status

        @app.get("/<path:path>")
        def visit(path: str) -> str:
            self.visits.append(request.full_path)
            return "visited"

        return app


@pytest.fixture(scope="session")
def sink_server() -> Iterator[EventSink]:
    """The session's one sink server (starting and stopping one per test costs a second).

    Fixtures of wider scope post here; tests use :func:`event_sink`, which resets it.
    """
    sink = EventSink()
    with serving(sink.app()) as url:
        sink.url = f"{url}/"
        yield sink


@pytest.fixture
def event_sink(sink_server: EventSink) -> EventSink:
    """The sink, emptied and accepting events; its ``url`` is where to post them."""
    sink_server.reset()
    return sink_server
