"""moto's S3 server on a port of its own, which a test stops and starts again: a store outage.

The session's S3 server (:mod:`tests.plugins.s3_server`) must stay up for every other test, so
outage tests get their own server on a fixed port. moto keeps its buckets in this process, so
a restarted server on the same port serves the same objects, as a restarted MinIO does.

Two details make the outage real rather than approximate:

* every answer closes its connection, so once the listening socket is closed no client can
  keep talking over a kept-alive connection: each request afterwards is refused;
* :meth:`S3Server.stop_at_write` stops the server *during* a chosen write: the n-th PUT into a
  bucket is held until the server is down and then fails, so a multi-object write (an
  enrollment: crop, embeddings, record) is cut between two of its objects, deterministically.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
HOLD_S = 30.0


class S3Server:
    """A stoppable moto S3 endpoint at ``http://127.0.0.1:<port>``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.cut = threading.Event()
        """Set when the trapped write arrived and the server is going down."""
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._trap: tuple[str, int] | None = None
        self._writes = 0
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._stopped.clear()
        self._server = make_server(
            "127.0.0.1", self.port, self._app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket; a held write then fails, every new request is refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
        self._stopped.set()

    def stop_at_write(self, bucket: str, nth: int) -> None:
        """Go down when the ``nth`` PUT into ``bucket`` (counted from now) arrives; the test
        waits for :attr:`cut`, then calls :meth:`stop`."""
        with self._lock:
            self._trap, self._writes = (bucket, nth), 0
        self.cut.clear()

    def _app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self._trapped(environ):
            self.cut.set()
            self._stopped.wait(HOLD_S)
            start_response("503 Service Unavailable", [("Connection", "close")])
            return [b"<Error><Code>ServiceUnavailable</Code></Error>"]

        def closing(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            return start_response(status, [*headers, ("Connection", "close")], *args)

        return self._moto(environ, closing)

    def _trapped(self, environ: Environ) -> bool:
        if environ["REQUEST_METHOD"] != "PUT":
            return False
        with self._lock:
            if self._trap is None or not environ["PATH_INFO"].startswith(f"/{self._trap[0]}/"):
                return False
            self._writes += 1
            if self._writes < self._trap[1]:
                return False
            self._trap = None
            return True
