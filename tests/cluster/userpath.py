"""The user's path through a running overlay, as the README's "Deploy to a cluster" walks it:
upload photos with the S3 API, let MinIO's webhook announce them, query the predictor with
``facerank query --url``, with the README's ``curl`` (bearer token included) and over gRPC with
KServe's client (its token as metadata), query through
the web page, drop photos into the queries bucket and read the results the identify function
writes beside them, name an unknown group on the web page, and retrain with two workers to a
decision. Shared by the dev and prod tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import requests
from kserve import InferInput, InferRequest, InferResponse
from kserve.inference_client import InferenceGRPCClient

from facerank.gallery import Gallery
from facerank.queries import result_key
from facerank.storage import S3Store
from tests.cluster.deployment import Deployment
from tests.plugins.cli import run_facerank
from tests.plugins.faces import DETECTABLE_FACES, encode, face_shot

PHOTOS = 4
NAMESPACE = "facerank"
MINIO = f"http://minio.{NAMESPACE}.svc.cluster.local:9000"
PREDICTOR = f"http://facerank-predictor-direct.{NAMESPACE}.svc.cluster.local:8080"
PREDICTOR_GRPC = f"http://facerank-predictor-direct.{NAMESPACE}.svc.cluster.local:8083"
"""gRPC, written as a URL so the harness translates it like any Service address."""
WEB = f"http://facerank-web.{NAMESPACE}.svc.cluster.local"
BROKER = f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/facerank"
QUERIES = "queries"
T = TypeVar("T")
EVENTS_S = 120.0
"""How long an event's effect (an enrollment, a result) may take to show."""


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


def s3_store(deployment: Deployment) -> S3Store:
    """MinIO as the user reaches it, with the root credentials the README has them use."""
    env = s3_env(deployment)
    return S3Store(
        env["FACERANK_S3_ENDPOINT"], env["FACERANK_S3_ACCESS_KEY"], env["FACERANK_S3_SECRET_KEY"]
    )


def wait_until(deployment: Deployment, probe: Callable[[], T], what: str) -> T:
    """``probe()`` once it is truthy, checking meanwhile that nothing in the deployment failed;
    fails after :data:`EVENTS_S` naming ``what`` and the last value seen."""
    end = time.monotonic() + EVENTS_S
    while True:
        deployment.assert_healthy()
        value = probe()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what} (last: {value!r})"
        time.sleep(0.2)


def upload_and_enroll(deployment: Deployment, photos: Path, work: Path) -> None:
    """``facerank upload`` to MinIO; MinIO's webhook -> source -> Broker -> enroll; then until
    the predictor serves every enrolled face (it follows the gallery every few seconds)."""
    folders = sorted(str(p) for p in photos.iterdir())
    run_facerank("upload", *folders, data_dir=work, env=s3_env(deployment))
    assert deployment.minio is not None
    deployment.minio.drain()
    gallery = Gallery(s3_store(deployment), "gallery")
    expected = {f"p{p}": PHOTOS for p in DETECTABLE_FACES}
    wait_until(deployment, lambda: gallery.identities() == expected, f"enrollment of {expected}")
    faces = len(DETECTABLE_FACES) * PHOTOS
    wait_until(deployment, lambda: served_faces(deployment) >= faces, f"{faces} served faces")


def served_faces(deployment: Deployment) -> int:
    """The predictor's ``facerank_gallery_faces`` gauge (its ``/metrics``, open by design)."""
    metrics = requests.get(deployment.url(PREDICTOR) + "/metrics", timeout=30)
    assert metrics.status_code == 200, metrics.text
    found = re.search(r"^facerank_gallery_faces (\S+)$", metrics.text, re.MULTILINE)
    return int(float(found[1])) if found else 0


def identify(deployment: Deployment, photos: Mapping[str, bytes]) -> dict[str, dict]:
    """Put ``photos`` (key -> bytes) into the queries bucket with the S3 API, as the README's
    ``mc cp`` does; MinIO's webhook -> source -> Broker -> identify, which ranks them through
    the predictor and writes ``results/<key>.json`` beside each. The results, by key."""
    store = s3_store(deployment)
    for key, data in photos.items():
        store.put(QUERIES, key, data, content_type="image/jpeg")
    assert deployment.minio is not None
    deployment.minio.drain()

    def results() -> dict[str, dict]:
        keys = [result_key(key) for key in photos]
        if not all(store.exists(QUERIES, key) for key in keys):
            return {}
        return {key: json.loads(store.get(QUERIES, result_key(key)).data) for key in photos}

    return wait_until(deployment, results, f"results of {sorted(photos)}")


def delete_queries(deployment: Deployment, keys: list[str]) -> None:
    """Delete query photos with the S3 API; until the identify function deleted their results."""
    store = s3_store(deployment)
    for key in keys:
        store.delete(QUERIES, key)

    def gone() -> bool:
        return not any(store.exists(QUERIES, result_key(key)) for key in keys)

    wait_until(deployment, gone, f"the results of {keys} to go")


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


def query_grpc(deployment: Deployment, photo: Path) -> str:
    """The photo through KServe's gRPC client on the direct Service's gRPC port, with the token
    as ``authorization`` metadata (see the README's API section). The top identity."""
    target = deployment.url(PREDICTOR_GRPC).removeprefix("http://")
    token = deployment.secret("facerank-api-token", "token")
    image = InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([base64.b64encode(photo.read_bytes())], dtype=np.object_))
    request = InferRequest("facerank", [image], parameters={"top_k": 1})

    async def call() -> InferResponse:
        async with InferenceGRPCClient(target, retries=0) as client:
            return await client.infer(request, headers=(("authorization", f"Bearer {token}"),))

    identities = asyncio.run(call()).get_output_by_name("identity").as_numpy().tolist()
    return identities[0].decode() if identities else ""


def query_web(deployment: Deployment, photo: Path) -> dict:
    response = requests.post(
        deployment.url(WEB) + "/api/query",
        files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def name_unknown_face(deployment: Deployment, face_id: str, identity: str) -> str:
    """Name the group of unknown face ``face_id`` on the web page, as a person does: find the
    group showing its crop, type a name and the API token into its form. The group's name."""
    web = deployment.url(WEB)
    page = requests.get(f"{web}/unknown", timeout=60)
    assert page.status_code == 200, page.text
    groups = re.findall(r'<li data-testid="group-(\w+)">(.*?)</li>', page.text, re.DOTALL)
    [group] = [g for g, html in groups if f"/unknown/faces/{face_id}/crop.png" in html]
    crop = requests.get(f"{web}/unknown/faces/{face_id}/crop.png", timeout=60)
    assert crop.status_code == 200, crop.text
    assert crop.headers["Content-Type"] == "image/png"
    named = requests.post(
        f"{web}/unknown/{group}/name",
        data={"identity": identity, "token": deployment.secret("facerank-api-token", "token")},
        allow_redirects=False,
        timeout=60,
    )
    assert named.status_code == 303, named.text
    return group


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
