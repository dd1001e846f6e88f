"""Object-store fixtures: moto's S3 server over real HTTP, and a store of each backend.

Why a real server rather than moto's in-process mocks: the S3 backend's job is to speak HTTP
through minio and urllib3 (timeouts, retries, header encoding, error bodies), and only a server
on a socket exercises that path. One server per session keeps the suite fast; moto's state is
reset before each test so tests cannot see each other's buckets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from moto.server import ThreadedMotoServer

from facerank.storage import FolderStore, ObjectStore, S3Store

S3_ACCESS_KEY = "facerank-test"
S3_SECRET_KEY = "facerank-test-secret"
"""moto accepts any credentials; these only make requests signed like real ones."""


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL (``http://127.0.0.1:PORT``) of a moto S3 server on a free loopback port."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_store(s3_server: str) -> S3Store:
    """An S3Store on an empty moto server."""
    response = urllib3.request("POST", f"{s3_server}/moto-api/reset", timeout=10.0)
    assert response.status == 200, f"moto reset failed: {response.status}"
    return S3Store(s3_server, S3_ACCESS_KEY, S3_SECRET_KEY)


@pytest.fixture
def folder_store(tmp_path: Path) -> FolderStore:
    """A FolderStore in an empty temporary folder."""
    return FolderStore(tmp_path / "buckets")


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each backend in turn, so one contract test proves both behave the same."""
    return request.getfixturevalue(f"{request.param}_store")
