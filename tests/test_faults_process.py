"""Process faults: processes killed outright (SIGKILL) come back consistent and lose nothing.

* The predictor killed during a model + gallery switch, once while the new version is pending
  and once after it became active, while the predictor holds the new pair loaded but not yet
  published (held there by :mod:`tests.plugins.paused_switch`, so the kill always lands
  inside the switch): restarted by the supervisor, it serves one version with that
  version's whole gallery, every distance exactly the one between the query's and the stored
  embedding of that version.
* ``facerank up`` killed while photos are being enrolled: none of its components outlives it
  (they would hold the ports and the data), and the next ``facerank up`` on the same data
  enrolls every photo exactly once, including those added and removed while it was down.
"""

from __future__ import annotations

import base64
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

from facerank.gallery import Gallery
from facerank.registry import ModelRef
from facerank.reindex import reindex
from facerank.storage import FolderStore
from facerank.supervisor import Component, Supervisor
from tests.plugins.enroller import lfw_photo
from tests.plugins.faces import encode
from tests.plugins.models import switch_scene
from tests.plugins.paused_switch import MODULE, PAUSE_DIR_ENV, PAUSED
from tests.test_up import Up, drop

pytestmark = pytest.mark.slow

OLD, NEW = "lbp-v0", "tiny-v2"
WAIT_S = 90.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def kill(module: str, parent: psutil.Process) -> int:
    """SIGKILL the child of ``parent`` running ``python -m <module>``; its pid."""
    [child] = [
        p for p in parent.children() if p.cmdline()[-2:] == ["-m", module] and p.is_running()
    ]
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    return child.pid


@contextmanager
def supervised(component: Component, env: dict[str, str]) -> Iterator[None]:
    """``component`` started and restarted when it dies, as ``facerank up`` watches it."""
    stop = threading.Event()
    with Supervisor([component], env=env) as supervisor:
        supervisor.start()
        watcher = threading.Thread(target=supervisor.watch, args=(stop,), kwargs={"poll_s": 0.1})
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join(30)


# --- the predictor, killed during a switch -------------------------------------------------


def test_predictor_killed_during_a_switch_restarts_into_one_consistent_version(
    tmp_path: Path,
    astronaut: np.ndarray,
    lfw_faces: np.ndarray,
    free_port: Callable[[], int],
) -> None:
    pytest.importorskip("tensorflow")
    scene = switch_scene(tmp_path, astronaut, lfw_faces, new_version=NEW)
    enroller, new_model, query = scene.enroller, scene.new_model, scene.query
    gallery, registry = enroller.handler.gallery, enroller.handler.models.registry
    vectors = scene.query_vectors

    pause = tmp_path / "pause"
    pause.mkdir()
    # The predictor as `python -m inference` runs it, held inside its next switch (see MODULE).
    predictor = Component("predictor", MODULE, free_port(), health_path="/v1/models/facerank")
    url = f"{predictor.url}/v1/models/facerank:predict"
    body = {"instances": [{"image": {"b64": base64.b64encode(query).decode()}, "top_k": 10}]}

    def serves(version: str, identities: set[str]) -> bool:
        """Whether the predictor answers from ``version`` with exactly that version's gallery."""
        try:
            response = requests.post(url, json=body, timeout=30)
        except requests.ConnectionError:
            return False  # still restarting
        if response.status_code != 200:
            return False
        [prediction] = response.json()["predictions"]
        [face] = prediction["faces"]
        for match in face["matches"]:  # never a distance from another version's vectors
            stored = gallery.embedding(match["face_id"], prediction["model_version"])
            distance = float(np.linalg.norm(vectors[prediction["model_version"]] - stored))
            assert match["distance"] == pytest.approx(distance, abs=1e-4)
        found = {m["identity"] for m in face["matches"]}
        return prediction["model_version"] == version and found == identities

    env = {
        "FACERANK_DATA_DIR": str(tmp_path),
        "FACERANK_GALLERY_REFRESH_S": "0.2",
        PAUSE_DIR_ENV: str(pause),
        # Restarted after a kill: the new process must get the gRPC port the dead one held.
        "FACERANK_PREDICTOR_GRPC_PORT": str(free_port()),
    }
    with supervised(predictor, env):
        wait_for(lambda: serves(OLD, set(scene.first)), "the old version")

        registry.begin_switch(ModelRef(NEW))  # pending: enrollments embed with both
        enroller.add("mid-switch/1.jpg", scene.late_photo)
        reindex(gallery, new_model)
        killed = kill(MODULE, psutil.Process())
        wait_for(
            lambda: serves(OLD, {*scene.first, "mid-switch"}), "a restart still on the old version"
        )

        registry.complete_switch(NEW, "test")
        # The window, held open: the predictor saw the pointer move, loaded the new model and
        # its gallery aside, and waits before publishing them; it still serves the old pair.
        wait_for((pause / PAUSED).exists, "the predictor inside the switch")
        assert (pause / PAUSED).read_text(encoding="utf-8") == NEW
        assert serves(OLD, {*scene.first, "mid-switch"})
        assert kill(MODULE, psutil.Process()) != killed
        wait_for(lambda: serves(NEW, {*scene.first, "mid-switch"}), "a restart on the new version")


# --- facerank up, killed while enrolling -----------------------------------------------------


def enrolled(data_dir: Path) -> dict[str, str]:
    """``key -> etag`` of every enrolled photo (its commit record)."""
    gallery = Gallery(FolderStore(data_dir / "buckets"), "gallery")
    return {key: etag for (_, key), etag in gallery.sources().items()}


def photos_in(data_dir: Path) -> dict[str, str]:
    return {i.key: i.etag for i in FolderStore(data_dir / "buckets").list("faces")}


def test_up_killed_with_sigkill_restarts_on_the_same_data_without_loss_or_duplicates(
    tmp_path: Path, astronaut: np.ndarray, lfw_faces: np.ndarray, free_port: Callable[[], int]
) -> None:
    data_dir = tmp_path / "data"
    names = ("BROKER", "SOURCE", "ENROLL", "IDENTIFY", "NOTIFY", "PREDICTOR", "WEB", "RETRAIN")
    names += ("PREDICTOR_GRPC",)
    env = {f"FACERANK_{name}_PORT": str(free_port()) for name in names}
    env["FACERANK_RECONCILE_INTERVAL"] = "1"
    photos = [encode(astronaut, "JPEG")] + [
        encode(lfw_photo(lfw_faces, i), "JPEG", quality=90) for i in (0, 1, 2, 3, 5)
    ]

    first = Up(data_dir, env)
    try:
        first.wait_for(lambda: "facerank is up" in first.output(), "facerank up")
        components = psutil.Process(first.process.pid).children()
        assert len(components) >= 5
        for i, photo in enumerate(photos[:3]):
            drop(data_dir, f"person-{i}/1.jpg", photo)
        first.wait_for(lambda: enrolled(data_dir), "a first enrollment")
        # Two more photos, then the kill at once: it lands while they are on their way (no
        # photo crosses watcher, broker and enroll in the microseconds between), whatever
        # happened to the first three meanwhile.
        for i, photo in enumerate(photos[3:5], start=3):
            drop(data_dir, f"person-{i}/1.jpg", photo)
        first.process.send_signal(signal.SIGKILL)  # mid-enrollment: no stop, no cleanup
        first.process.wait(10)
        assert enrolled(data_dir).keys() < photos_in(data_dir).keys()  # it was mid-enrollment
        _, alive = psutil.wait_procs(components, timeout=30)
        for survivor in alive:  # never leave them running, whatever the verdict
            survivor.kill()
        assert alive == [], f"components outlived facerank up: {alive}"
    finally:
        if first.process.poll() is None:
            first.process.kill()

    # While it is down: one more photo, and one photo removed.
    drop(data_dir, "person-5/1.jpg", photos[5])
    (data_dir / "buckets" / "faces" / "person-0" / "1.jpg").unlink()

    again = Up(data_dir, env)
    try:
        again.wait_for(lambda: "facerank is up" in again.output(), "facerank up to restart")
        again.wait_for(
            lambda: enrolled(data_dir) == photos_in(data_dir), "the gallery to match the bucket"
        )
        assert sorted(enrolled(data_dir)) == [f"person-{i}/1.jpg" for i in range(1, 6)]
        gallery = Gallery(FolderStore(data_dir / "buckets"), "gallery")
        assert gallery.identities() == {f"person-{i}": 1 for i in range(1, 6)}
        assert len(gallery.matrix(OLD).face_ids) == 5  # no face counted twice
        assert not list((data_dir / "broker" / "dead-letter").glob("*/*.json"))
        assert again.stop() == 0
    finally:
        if again.process.poll() is None:
            again.process.kill()
    queue = data_dir / "broker" / "queue"
    assert not list(queue.glob("*/*.json")), "events left undelivered"
