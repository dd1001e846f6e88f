"""Run a real WSGI app on a loopback port in a background thread, for tests that speak HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from werkzeug.serving import make_server

from facerank.ports import reserve_port, reserved_port


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Yield the base URL of ``app`` served by a threaded werkzeug server on 127.0.0.1."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def free_port() -> Iterator[Callable[[], int]]:
    """Call it for a port a child process (or a server started later) binds: reserved for this
    test (:mod:`facerank.ports`), so nothing else can bind it or connect from it meanwhile, and
    a URL on it is refused until its server listens. Fixtures of wider scope use
    :func:`facerank.ports.reserved_ports`; in-process servers bind port 0 (:func:`serving`)."""
    with ExitStack() as reservations:
        yield lambda: reserved_port(reservations.enter_context(reserve_port()))
