"""The user's path through a running overlay, as the README's "Deploy to a cluster" walks it:
upload photos with the S3 API, let MinIO's webhook announce them, query the predictor with
``facerank query --url`` and with the README's ``curl`` (bearer token included), query through
the web page, and retrain with two workers to a decision. Shared by the dev and prod tests.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import requests

from facerank.gallery import Gallery
from facerank.storage import S3Store
from tests.cluster.deployment import Deployment
from tests.plugins.cli import run_facerank
from tests.plugins.faces import DETECTABLE_FACES, encode, face_shot

PHOTOS = 4
NAMESPACE = "facerank"
MINIO = f"http://minio.{NAMESPACE}.svc.cluster.local:9000"
PREDICTOR = f"http://facerank-predictor-direct.{NAMESPACE}.svc.cluster.local:8080"
WEB = f"http://facerank-web.{NAMESPACE}.svc.cluster.local"
BROKER = f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/facerank"


def s3_env(deployment: Deployment) -> dict[str, str]:
    """What the README has a user export to reach MinIO (here its translated address)."""
    return {
        "FACERANK_STORE": "s3",
        "FACERANK_S3_ENDPOINT": deployment.url(MINIO),
        "FACERANK_S3_ACCESS_KEY": deployment.secret("minio-credentials", "MINIO_ROOT_USER"),
        "FACERANK_S3_SECRET_KEY": deployment.secret("minio-credentials", "MINIO_ROOT_PASSWORD"),
    }


def write_photos(folder: Path, lfw_faces: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    for person in DETECTABLE_FACES:
        (folder / f"p{person}").mkdir(parents=True)
        for photo in range(PHOTOS):
            shot = face_shot(lfw_faces[person], rng, flip=photo % 2 == 1)
            (folder / f"p{person}" / f"{photo}.jpg").write_bytes(encode(shot, "JPEG", quality=92))
    return folder


def upload_and_enroll(deployment: Deployment, photos: Path, work: Path) -> None:
    """``facerank upload`` to MinIO; MinIO's webhook -> source -> Broker -> enroll."""
    env = s3_env(deployment)
    folders = sorted(str(p) for p in photos.iterdir())
    run_facerank("upload", *folders, data_dir=work, env=env)
    assert deployment.minio is not None
    deployment.minio.drain()
    store = S3Store(
        env["FACERANK_S3_ENDPOINT"], env["FACERANK_S3_ACCESS_KEY"], env["FACERANK_S3_SECRET_KEY"]
    )
    gallery = Gallery(store, "gallery")
    expected = {f"p{p}": PHOTOS for p in DETECTABLE_FACES}
    end = time.monotonic() + 120
    while True:
        deployment.assert_healthy()
        counts = gallery.identities()
        if counts == expected:
            return
        assert time.monotonic() < end, f"enrolled {counts}, expected {expected}"
        time.sleep(0.5)


def query_cli(deployment: Deployment, photo: Path, work: Path) -> dict:
    token = deployment.secret("facerank-api-token", "token")
    result = run_facerank(
        "query",
        str(photo),
        "--json",
        "--url",
        deployment.url(PREDICTOR),
        data_dir=work,
        env={"FACERANK_API_TOKEN": token},
    )
    return json.loads(result.stdout)


def query_curl(deployment: Deployment, photo: Path, work: Path) -> dict:
    """The README's query.json and curl, with the token header it documents."""
    token = deployment.secret("facerank-api-token", "token")
    body = {
        "instances": [{"image": {"b64": base64.b64encode(photo.read_bytes()).decode()}, "top_k": 3}]
    }
    (work / "query.json").write_text(json.dumps(body), encoding="utf-8")
    curl = shutil.which("curl")
    assert curl, "curl is needed to run the README's query"
    result = subprocess.run(
        [
            curl,
            "-sS",
            "--fail-with-body",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "content-type: application/json",
            "-d",
            "@query.json",
            deployment.url(PREDICTOR) + "/v1/models/facerank:predict",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"curl: {result.returncode} {result.stdout} {result.stderr}"
    return json.loads(result.stdout)


def query_web(deployment: Deployment, photo: Path) -> dict:
    response = requests.post(
        deployment.url(WEB) + "/api/query",
        files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def top_identity(prediction: dict) -> str:
    """The first match of the largest face, in a V1 reply or one prediction of it."""
    if "predictions" in prediction:
        [prediction] = prediction["predictions"]
    return prediction["faces"][0]["matches"][0]["identity"]


def retrain(deployment: Deployment, work: Path) -> str:
    result = run_facerank(
        "retrain",
        "--workers",
        "2",
        "--wait",
        "--broker-url",
        deployment.url(BROKER),
        data_dir=work,
        env=s3_env(deployment),
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"facerank retrain: {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout
