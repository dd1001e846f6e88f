"""A chat tool's incoming webhook on a loopback port: records the JSON bodies POSTed to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, request

from tests.plugins.http import serving


class Webhook:
    """Records JSON bodies POSTed to ``url``; set ``status`` to make it fail, ``hold`` to keep
    each POST waiting until it is set (``holding`` is set once one is waiting)."""

    def __init__(self) -> None:
        self.url = ""
        self.status = 200
        self.hold: threading.Event | None = None
        self.holding = threading.Event()
        self._bodies: list[dict[str, Any]] = []
        self._raw: list[bytes] = []
        self._lock = threading.Lock()

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._bodies)

    @property
    def raw(self) -> list[bytes]:
        with self._lock:
            return list(self._raw)

    def wait_until(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list[dict[str, Any]]:
        """The bodies once ``condition`` holds for them; fails the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition(bodies := self.bodies):
            assert time.monotonic() < deadline, f"condition not met by bodies {bodies}"
            time.sleep(0.05)
        return bodies

    def app(self) -> Flask:
        app = Flask(__name__)

        @app.post("/hook")
        def hook() -> tuple[str, int]:
            if self.hold is not None:
                self.holding.set()
                assert self.hold.wait(30), "the test never released the held POST"
            if self.status >= 300:
                return "refused on purpose", self.status
            with self._lock:
                self._raw.append(request.get_data())
                self._bodies.append(request.get_json())
            return "ok", self.status

        return app


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    with serving(hook.app()) as url:
        hook.url = f"{url}/hook"
        yield hook
