"""An atomic model + gallery switch on the real predictor, under concurrent queries.

Four clients query ``python -m inference`` without pause while the gallery is re-embedded with
a second model (a small exported SavedModel), a face is enrolled mid-switch, and the pointer
moves. Every reply is checked against the store: each distance must be the one between the
query's embedding by the reply's model version and the stored embedding of that version. A
reply mixing versions (a new query embedding against the old gallery, or the reverse) would
give other distances, or another dimension altogether.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from facerank.registry import ModelRef
from facerank.reindex import reindex
from facerank.supervisor import Component, Supervisor
from tests.plugins.models import switch_scene
from tests.plugins.pretrained import Served

pytestmark = pytest.mark.slow
pytest.importorskip("tensorflow")

NEW = "tiny-v2"
CLIENTS = 4


class Clients:
    """Threads posting the same V1 query until stopped; every reply kept, in order per thread."""

    def __init__(self, url: str, image: bytes) -> None:
        self.body = {
            "instances": [{"image": {"b64": base64.b64encode(image).decode()}, "top_k": 10}]
        }
        self.url = f"{url}/v1/models/facerank:predict"
        self.replies: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        self.errors: list[BaseException] = []
        """What ended a client early (a refused connection, a reply that is not JSON): the
        test fails on it rather than on the fewer replies it left."""
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(CLIENTS)]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._threads), "a client hung"
        assert not self.errors, f"a client failed: {self.errors[0]!r}"

    def _run(self, i: int) -> None:
        try:
            with requests.Session() as session:
                while not self._stop.is_set():
                    response = session.post(self.url, json=self.body, timeout=60)
                    self.replies[i].append((response.status_code, response.json()))
        except Exception as exc:  # handed to the test thread, which fails on it
            self.errors.append(exc)
            self._stop.set()

    def versions_seen(self) -> set[str]:
        return {
            body["predictions"][0]["model_version"]
            for replies in list(self.replies.values())
            for status, body in list(replies)
            if status == 200
        }

    def replies_from(self, version: str) -> int:
        """The fewest replies from ``version`` any one client has had."""
        return min(
            sum(
                1
                for status, body in list(self.replies[i])
                if status == 200 and body["predictions"][0]["model_version"] == version
            )
            for i in range(CLIENTS)
        )

    def wait_for(self, version: str, deadline_s: float, *, each: int = 0) -> None:
        """Until some client had a reply from ``version`` (``each`` client ``each`` replies)."""
        deadline = time.monotonic() + deadline_s
        while version not in self.versions_seen() or self.replies_from(version) < each:
            assert not self.errors, f"a client failed: {self.errors[0]!r}"
            assert time.monotonic() < deadline, f"no reply from {version} before the deadline"
            time.sleep(0.1)


def test_switch_under_load_never_answers_from_a_mixed_state(
    tmp_path: Path,
    astronaut: np.ndarray,
    lfw_faces: np.ndarray,
    free_port: Callable[[], int],
    served: Served,
) -> None:
    """From the fallback model, and from the default one (SSD boxes, landmark alignment)."""
    scene = switch_scene(tmp_path, astronaut, lfw_faces, new_version=NEW, served=served)
    enroller, new_model, query = scene.enroller, scene.new_model, scene.query
    gallery, registry = enroller.handler.gallery, enroller.handler.models.registry
    old = scene.old_version

    port = free_port()
    env = {
        "FACERANK_DATA_DIR": str(tmp_path),
        "FACERANK_GALLERY_REFRESH_S": "0.2",
        **served.env,
        "FACERANK_PREDICTOR_GRPC_PORT": str(free_port()),
    }
    predictor = Component("predictor", "inference", port, health_path="/v1/models/facerank")
    with Supervisor([predictor], env=env) as supervisor:
        supervisor.start()
        with Clients(predictor.url, query) as clients:
            clients.wait_for(old, 30)
            registry.begin_switch(ModelRef(NEW))
            enroller.add("mid-switch/1.jpg", scene.late_photo)
            reindex(gallery, new_model)
            registry.complete_switch(NEW, "test")
            clients.wait_for(NEW, 60, each=3)  # every client served by the new pair

    checked = 0
    for replies in clients.replies.values():
        assert {status for status, _ in replies} == {200}
        versions = [body["predictions"][0]["model_version"] for _, body in replies]
        switched_at = versions.index(NEW) if NEW in versions else len(versions)
        assert set(versions[:switched_at]) <= {old}
        assert set(versions[switched_at:]) <= {NEW}
        for _, body in replies:
            prediction = body["predictions"][0]
            version = prediction["model_version"]
            [face] = prediction["faces"]
            assert {m["identity"] for m in face["matches"]} >= scene.first  # a whole gallery
            for match in face["matches"]:
                stored = gallery.embedding(match["face_id"], version)
                expected = float(np.linalg.norm(scene.query_vectors[version] - stored))
                assert match["distance"] == pytest.approx(expected, abs=1e-4)
                checked += 1
    assert checked > 0
    last = next(body for _, body in reversed(clients.replies[0]))
    identities = {m["identity"] for m in last["predictions"][0]["faces"][0]["matches"]}
    assert "mid-switch" in identities  # enrolled during the switch, not lost by it
    assert old in clients.versions_seen()
