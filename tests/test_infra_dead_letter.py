"""The dead-letter sink: ``python -m functions.deadletter`` as its container runs it.

Started as a real process on a loopback port over the folder store; events are posted the way
Knative's Broker dead-letters them (binary mode, with its ``knativeerror*`` extensions).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cloudevents.http import CloudEvent

from facerank.cehttp import to_binary
from facerank.events import OBJECT_CREATED
from facerank.ports import reserved_ports
from functions.deadletter.app import BUCKET, dead_letter_key

ROOT = Path(__file__).resolve().parent.parent


def dead_letter(**extra: str) -> CloudEvent:
    """An object.created event as Knative hands it to a dead-letter sink."""
    attributes = {
        "type": OBJECT_CREATED,
        "source": "http://minio.facerank.svc.cluster.local:9000/faces",
        "id": "4f1c",
        "subject": "alice/1.jpg",
        "datacontenttype": "application/json",
        "knativeerrordest": "http://facerank-enroll.facerank.svc.cluster.local",
        "knativeerrorcode": "503",
        "knativeerrordata": base64.b64encode(b'{"error": "store down"}').decode(),
        **extra,
    }
    return CloudEvent(attributes, {"bucket": "faces", "key": "alice/1.jpg", "etag": "e1"})


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("dead-letter")
    with reserved_ports(1) as [port]:
        yield from _serving_sink(data_dir, port)


def _serving_sink(data_dir: Path, port: int) -> Iterator[tuple[str, Path]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "functions.deadletter"],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", ""),
            "FACERANK_DATA_DIR": str(data_dir),
            "PORT": str(port),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield url, data_dir / "buckets" / BUCKET
    finally:
        process.terminate()
        process.communicate(timeout=30)


def wait_until_healthy(url: str, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail(f"the dead-letter sink did not start within {timeout} s")


def post(url: str, event: CloudEvent) -> requests.Response:
    headers, body = to_binary(event)
    return requests.post(url, data=body, headers=headers, timeout=10)


def test_a_dead_letter_is_kept_with_knatives_error(sink: tuple[str, Path]) -> None:
    url, bucket = sink
    event = dead_letter()
    assert post(url, event).status_code == 202
    stored = json.loads((bucket / dead_letter_key(event)).read_text(encoding="utf-8"))
    assert stored["event"]["id"] == "4f1c"
    assert stored["event"]["subject"] == "alice/1.jpg"
    assert stored["event"]["data"] == {"bucket": "faces", "key": "alice/1.jpg", "etag": "e1"}
    assert stored["event"]["knativeerrorcode"] == "503"
    assert stored["event"]["knativeerrordest"].startswith("http://facerank-enroll.")
    assert stored["received"].endswith("+00:00")


def test_a_redelivered_dead_letter_is_stored_once(sink: tuple[str, Path]) -> None:
    url, bucket = sink
    event = dead_letter(id="7a2")
    assert post(url, event).status_code == 202
    kept = sorted(bucket.rglob("*.json"))
    assert bucket / dead_letter_key(event) in kept
    assert post(url, event).status_code == 202
    assert sorted(bucket.rglob("*.json")) == kept
    other_destination = dead_letter(id="7a2", knativeerrordest="http://facerank-source")
    assert dead_letter_key(other_destination) != dead_letter_key(event)


def test_odd_event_types_are_filed_apart(sink: tuple[str, Path]) -> None:
    url, bucket = sink
    event = dead_letter(type="../../etc/passwd", id="x1")
    assert post(url, event).status_code == 202
    assert dead_letter_key(event).startswith("other/")
    assert (bucket / dead_letter_key(event)).is_file()


def test_what_is_not_an_event_is_refused(sink: tuple[str, Path]) -> None:
    url, _ = sink
    reply = requests.post(url, data=b"hello", timeout=10)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "bad_event"
