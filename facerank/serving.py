"""Serve a WSGI app in production shape: waitress, loopback by default, clean stop on signals.

Shared by every facerank process that listens (the local broker, the functions) so each one
binds, logs and drains the same way. SIGTERM (Kubernetes, ``facerank up``) and SIGINT (Ctrl-C)
make waitress stop accepting and finish the requests under way before :func:`serve` returns.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from waitress.server import create_server

log = logging.getLogger(__name__)


def listen_port(default: int) -> int:
    """``PORT`` as Knative and KServe inject it, else the component's default from settings."""
    return int(os.environ.get("PORT", default))


def loopback_url(port: int) -> str:
    """Where a process listening on ``port`` is reached from this machine."""
    return f"http://127.0.0.1:{port}"


def serve(app: Any, *, host: str, port: int, name: str, threads: int = 8) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM or SIGINT; return once drained.

    Raises ``OSError`` when the address cannot be bound, before any signal handler changes.
    """
    server = create_server(
        app, host=host, port=port, threads=threads, clear_untrusted_proxy_headers=True
    )
    previous: dict[int, Any] = {}
    try:  # handlers installed inside: a signal at any moment from here on closes the server
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _request_stop)
        log.info("%s listening on http://%s:%s", name, host, port)
        server.run()  # waitress ends its loop on SystemExit and joins its request threads
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("%s stopped", name)


def _request_stop(signum: int, _frame: object) -> None:
    log.info("signal %s: stopping", signal.Signals(signum).name)
    raise SystemExit(0)
