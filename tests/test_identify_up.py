"""Identification under ``facerank up``: real processes, real folders, a real test webhook.

Photos dropped into the queries folder are identified through the event path (source, broker,
identify, predictor), their results appear beside them, the ``face.identified`` events reach
the webhook through the notify function, and deleting a photo deletes its result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.plugins.cli import run_facerank
from tests.plugins.enroller import lfw_photo
from tests.plugins.faces import encode
from tests.plugins.webhook import Webhook
from tests.test_up import READY, Up, another_shot, drop, identities, top_identity

PORTS = ("BROKER", "SOURCE", "ENROLL", "IDENTIFY", "NOTIFY", "RETRAIN", "PREDICTOR", "WEB")
PORTS += ("PREDICTOR_GRPC",)


@pytest.fixture
def up(tmp_path: Path, webhook: Webhook, free_port: Callable[[], int]) -> Iterator[Up]:
    env = {f"FACERANK_{name}_PORT": str(free_port()) for name in PORTS}
    env |= {
        "FACERANK_RECONCILE_INTERVAL": "2",
        "FACERANK_GALLERY_REFRESH_S": "0.3",
        "FACERANK_NOTIFY_WEBHOOK_URL": webhook.url,
        "FACERANK_NOTIFY_FILTER": "*",
    }
    running = Up(tmp_path / "data", env)
    running.wait_for(lambda: READY in running.output(), "facerank up to be ready")
    yield running
    running.stop()


def drop_query(data_dir: Path, key: str, data: bytes) -> Path:
    path = data_dir / "buckets" / "queries" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_query_photos_are_identified_by_events_and_notified_at_the_webhook(
    up: Up, webhook: Webhook, astronaut: np.ndarray, lfw_faces: np.ndarray
) -> None:
    data_dir = Path(up.env["FACERANK_DATA_DIR"])
    drop(data_dir, "eileen/1.jpg", encode(astronaut, "JPEG"))
    up.wait_for(lambda: identities(data_dir) == {"eileen": 1}, "eileen to be enrolled")
    query = another_shot(data_dir, astronaut)
    up.wait_for(lambda: top_identity(query, up.env) == "eileen", "the predictor to serve eileen")

    # The enrolled photo itself, re-encoded: a match under any model's threshold.
    drop_query(data_dir, "party/eileen.jpg", encode(astronaut, "PNG"))
    drop_query(data_dir, "party/stranger.jpg", encode(lfw_photo(lfw_faces, 10), "JPEG"))
    drop_query(data_dir, "party/notes.txt", b"not a photo")

    def keys(bodies: list[dict]) -> set[str]:
        return {b["facerank"]["key"] for b in bodies}

    bodies = webhook.wait_until(lambda b: keys(b) >= {"party/eileen.jpg", "party/stranger.jpg"}, 60)
    by_key = {b["facerank"]["key"]: b for b in bodies}
    assert by_key["party/eileen.jpg"]["facerank"]["identities"] == ["eileen"]
    assert by_key["party/stranger.jpg"]["facerank"]["unknown_faces"] == 1
    assert "party/notes.txt" not in keys(bodies)  # refused: a result says why, no notification

    results = data_dir / "buckets" / "queries" / "results" / "party"
    eileen = json.loads((results / "eileen.jpg.json").read_text())
    assert eileen["identities"] == ["eileen"]
    assert eileen["faces"][0]["match"] is True
    up.wait_for(lambda: (results / "notes.txt.json").is_file(), "the refusal's result")
    assert json.loads((results / "notes.txt.json").read_text())["error"]["code"] == "not_an_image"

    (data_dir / "buckets" / "queries" / "party" / "eileen.jpg").unlink()
    up.wait_for(lambda: not (results / "eileen.jpg.json").exists(), "the result to go")
    assert (results / "stranger.jpg.json").is_file()
    # Results are never taken for photos: each photo was notified exactly once.
    assert sorted(keys(webhook.bodies)) == ["party/eileen.jpg", "party/stranger.jpg"]
    assert len(webhook.bodies) == 2

    # The stranger is an unknown group; naming it enrolls the photo through events.
    listing = json.loads(run_facerank("unknown", "ls", "--json", data_dir=data_dir).stdout)
    [group] = listing["groups"]
    assert group["samples"][0]["key"] == "party/stranger.jpg"
    run_facerank("unknown", "name", group["group"], "Zoë Li", data_dir=data_dir)
    up.wait_for(
        lambda: identities(data_dir) == {"eileen": 1, "Zoë Li": 1}, "the named group to enroll"
    )
    listing = json.loads(run_facerank("unknown", "ls", "--json", data_dir=data_dir).stdout)
    assert listing["groups"] == []

    # Renaming moves photos; events leave no trace of the old name anywhere.
    run_facerank("gallery", "mv", "eileen", "Eileen Collins", data_dir=data_dir)
    up.wait_for(lambda: identities(data_dir) == {"Eileen Collins": 1, "Zoë Li": 1}, "the rename")
    buckets = data_dir / "buckets"
    faces = [p.relative_to(buckets / "faces").as_posix() for p in (buckets / "faces").rglob("*")]
    assert not [key for key in faces if key.startswith("eileen")]
    records = (buckets / "gallery" / "identities").iterdir()
    assert sorted(p.name for p in records if any(p.iterdir())) == ["Eileen Collins", "Zoë Li"]
    assert up.stop() == 0
