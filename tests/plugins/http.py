"""Run a real WSGI app on a loopback port in a background thread, for tests that speak HTTP."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

_RANDOM = random.SystemRandom()


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


EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A loopback port for a child process to bind later (when it cannot be handed port 0).

    Not a port the kernel hands out itself: between our release and the child's bind, any
    outgoing connection on this busy machine (HTTP clients, moto, other test runs) may be
    given that same ephemeral port as its source port, and the child then fails to bind. So
    the port is drawn at random below the kernel's ephemeral range, where connections never
    get one, and checked free by binding it. In-process servers bind port 0 (:func:`serving`).
    """
    low = int(EPHEMERAL.read_text().split()[0]) if EPHEMERAL.is_file() else 32768
    for _ in range(100):
        port = _RANDOM.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low} after 100 tries")
