"""The API token: who must present it, who presents it, and what stays open.

One pipeline per model set-up (the fallback models, then the default ones: see
:class:`tests.plugins.pretrained.Served`) runs with ``FACERANK_API_TOKEN`` (and a different
webhook token) set, as real processes (see :mod:`tests.plugins.pipeline`). The predictor and
every function refuse a missing or wrong token with 401 and say how to present one; health and
readiness stay open; the local broker and the event source present the token to the functions,
``facerank query`` and the web page to the predictor, so the whole pipeline works end to end
with it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from facerank.auth import BearerTokenMiddleware, authorization_header, is_authorized
from facerank.broker import LocalBroker
from facerank.cehttp import from_http, to_binary
from facerank.errors import ConfigError
from facerank.events import FACE_ENROLLED, DeliveryError, ObjectChangeData, object_event
from facerank.settings import Settings
from facerank.storage import FolderStore
from functions.deadletter.app import create_app as dead_letter_app
from functions.source.emitter import Change, Emitter
from inference.web import create_app as web_app
from tests.plugins.enroller import Enroller, lfw_photo
from tests.plugins.faces import encode, variant
from tests.plugins.http import serving
from tests.plugins.pipeline import Pipeline, running_pipeline
from tests.plugins.pretrained import Served
from tests.plugins.sink import EventSink

pytestmark = pytest.mark.slow

TOKEN = "facerank-test-api-token-5e1f0c"
WEBHOOK = "facerank-test-webhook-token-9b7d"
WRONG = "facerank-wrong-token-000000000"
WAIT_S = 30.0


@dataclass
class Secured:
    """The module's pipeline, run with the token, its data folder and a query photo."""

    pipeline: Pipeline
    data_dir: Path
    query: bytes
    tap: EventSink

    def url(self, name: str) -> str:
        return self.pipeline.url(name)


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
    astronaut: np.ndarray,
    sink_server: EventSink,
    served: Served,
) -> Iterator[Secured]:
    """The pipeline with the tokens, on the fallback models, then on the default ones."""
    data_dir = tmp_path_factory.mktemp(f"access-{served.name}") / "data"
    Enroller(served.settings(data_dir)).add("astronaut/eileen.jpg", astronaut)
    shot = variant(astronaut[10:400, 60:460], np.random.default_rng(7))
    sink_server.reset()
    env = {"FACERANK_API_TOKEN": TOKEN, "FACERANK_WEBHOOK_TOKEN": WEBHOOK, **served.env}
    with running_pipeline(
        data_dir, tap_url=sink_server.url, tap_type=FACE_ENROLLED, env=env
    ) as pipeline:
        yield Secured(pipeline, data_dir, encode(shot, "JPEG", quality=90), sink_server)


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def v1_body(image: bytes) -> dict[str, object]:
    return {"instances": [{"image": {"b64": base64.b64encode(image).decode()}}]}


def assert_refused(response: requests.Response) -> None:
    """401, the challenge, a message saying what to send, and never a token in the body."""
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="facerank"'
    assert "Authorization: Bearer" in response.text
    assert "FACERANK_API_TOKEN" in response.text
    assert TOKEN not in response.text
    assert WRONG not in response.text


# --- the rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (None, False),
        ("", False),
        (f"Bearer {TOKEN}", True),
        (f"bearer   {TOKEN}  ", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (TOKEN, False),
        (f"Basic {TOKEN}", False),
        (f"Token {TOKEN}", False),
        ("Bearer", False),
    ],
)
def test_only_the_bearer_token_passes(header: str | None, allowed: bool) -> None:
    assert is_authorized(TOKEN, header) is allowed
    assert is_authorized("", header)  # no token configured: nothing is checked


def test_token_comes_from_the_environment_or_a_mounted_file_and_never_shows(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "token"
    secret.write_text(f"{TOKEN}\n")
    from_file = Settings.from_env({"FACERANK_API_TOKEN_FILE": str(secret)})
    assert from_file.api_token == TOKEN
    assert Settings.from_env({"FACERANK_API_TOKEN": TOKEN}).api_token == TOKEN
    assert TOKEN not in repr(from_file)
    assert "FACERANK_API_TOKEN" not in from_file.to_env()  # children read it where we did
    for weak in ("short-token", "has a space in it somewhere", "tab\tinside-the-token-xx"):
        with pytest.raises(ConfigError, match="FACERANK_API_TOKEN") as refused:
            Settings.from_env({"FACERANK_API_TOKEN": weak})
        assert weak not in str(refused.value)


def test_the_middleware_needs_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        BearerTokenMiddleware(lambda *_: None, token="", open_paths=())  # type: ignore[arg-type]


# --- the predictor ------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, WRONG], ids=["missing", "wrong"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/facerank:predict"),
        ("POST", "/v2/models/facerank/infer"),
        ("POST", "/v2/repository/models/facerank/unload"),
        ("POST", "/v2/repository/models/facerank/load"),
        ("GET", "/v2/models/facerank"),
        ("GET", "/docs"),
    ],
)
def test_predictor_refuses_without_the_token(
    secured: Secured, token: str | None, method: str, path: str
) -> None:
    response = requests.request(
        method, secured.url("predictor") + path, json={}, headers=bearer(token), timeout=30
    )
    assert_refused(response)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/metrics",
        "/v1/models",
        "/v1/models/facerank",
        "/v2/health/ready",
        "/v2/health/live",
        "/v2/models/facerank/ready",
    ],
)
def test_predictor_health_and_metrics_stay_open(secured: Secured, path: str) -> None:
    assert requests.get(secured.url("predictor") + path, timeout=30).status_code == 200


def test_predictor_ranks_with_the_token(secured: Secured) -> None:
    # An unload without the token first: refused before it reaches the model, which stays
    # loaded and keeps ranking.
    unload = secured.url("predictor") + "/v2/repository/models/facerank/unload"
    assert_refused(requests.post(unload, headers=bearer(None), timeout=30))
    assert requests.get(secured.url("predictor") + "/v1/models/facerank", timeout=30).ok
    response = requests.post(
        secured.url("predictor") + "/v1/models/facerank:predict",
        json=v1_body(secured.query),
        headers=bearer(TOKEN),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["faces"][0]["matches"][0]["identity"] == "astronaut"


def run_query(secured: Secured, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    photo = secured.data_dir.parent / "query.jpg"
    photo.write_bytes(secured.query)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FACERANK_API")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "facerank.cli.main",
            "query",
            str(photo),
            "--json",
            "--url",
            secured.url("predictor"),
        ],
        env={**environment, "FACERANK_DATA_DIR": str(secured.data_dir), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_facerank_query_presents_the_token(secured: Secured, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    result = run_query(secured, {"FACERANK_API_TOKEN_FILE": str(secret)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["faces"][0]["matches"][0]["identity"] == "astronaut"
    for env in ({}, {"FACERANK_API_TOKEN": WRONG}):
        refused = run_query(secured, env)
        assert refused.returncode == 2
        assert "answered 401" in refused.stderr
        assert "FACERANK_API_TOKEN" in refused.stderr
        assert WRONG not in refused.stderr + refused.stdout


def test_the_web_page_presents_the_token_server_side(secured: Secured) -> None:
    store = FolderStore(secured.data_dir / "buckets")
    photo = {"image": ("photo.jpg", secured.query, "image/jpeg")}
    replies = {}
    for token in (TOKEN, ""):
        settings = Settings(data_dir=secured.data_dir, api_token=token)
        with serving(web_app(settings, store, secured.url("predictor"))) as url:
            replies[token] = requests.post(f"{url}/api/query", files=photo, timeout=60)
            assert TOKEN not in requests.get(url, timeout=30).text  # the browser never holds it
    assert replies[TOKEN].status_code == 200, replies[TOKEN].text
    assert replies[TOKEN].json()["faces"][0]["matches"][0]["identity"] == "astronaut"
    assert replies[""].status_code == 502
    assert "credentials" in replies[""].json()["error"]
    assert TOKEN not in replies[""].text


# --- the functions ------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, WRONG], ids=["missing", "wrong"])
@pytest.mark.parametrize("function", ["enroll", "source"])
def test_functions_refuse_events_without_the_token(
    secured: Secured, function: str, token: str | None
) -> None:
    event = object_event("created", "urn:test", ObjectChangeData("faces", "x/1.jpg", etag="1"))
    headers, body = to_binary(event)
    response = requests.post(
        secured.url(function), data=body, headers={**headers, **bearer(token)}, timeout=30
    )
    assert_refused(response)
    assert response.json()["error"]["code"] == "unauthorized"
    assert requests.get(secured.url(function) + "/healthz", timeout=30).status_code == 200


def test_the_minio_webhook_checks_its_own_token(secured: Secured) -> None:
    webhook = secured.url("source") + "/minio"
    assert requests.post(webhook, data=b"", timeout=30).status_code == 401
    assert requests.post(webhook, data=b"", headers=bearer(TOKEN), timeout=30).status_code == 401
    assert requests.post(webhook, data=b"", headers=bearer(WEBHOOK), timeout=30).status_code == 200


def test_the_dead_letter_sink_refuses_without_the_token(tmp_path: Path) -> None:
    store = FolderStore(tmp_path)
    store.ensure_bucket("dead-letter")
    event = object_event("created", "urn:test", ObjectChangeData("faces", "x/1.jpg", etag="1"))
    headers, body = to_binary(event)
    with serving(dead_letter_app(store, api_token=TOKEN)) as url:
        assert_refused(requests.post(url, data=body, headers=headers, timeout=30))
        accepted = requests.post(url, data=body, headers={**headers, **bearer(TOKEN)}, timeout=30)
    assert accepted.status_code == 202
    assert len(list(store.list("dead-letter"))) == 1


def test_photos_flow_through_broker_and_functions_with_the_token(
    secured: Secured, lfw_faces: np.ndarray
) -> None:
    """Watcher -> source -> broker -> enroll: each hop presents the token to the next."""
    key = "lfw-token/1.jpg"
    FolderStore(secured.data_dir / "buckets").put(
        "faces", key, encode(lfw_photo(lfw_faces, 3), "JPEG", quality=90)
    )
    deadline = time.monotonic() + WAIT_S
    while not any(e.get("subject") == key for e in secured.tap.events):
        assert time.monotonic() < deadline, "the photo was not enrolled through the pipeline"
        time.sleep(0.05)
    assert not list((secured.data_dir / "broker" / "dead-letter").glob("*/*.json"))


def test_a_broker_without_the_token_gets_a_final_401(secured: Secured, tmp_path: Path) -> None:
    """A broker that does not present the token is refused, and 401 is not retried."""
    folder = tmp_path / "eventing"
    folder.mkdir()
    documents = [
        {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Broker",
            "metadata": {"name": "b"},
            "spec": {"delivery": {"retry": 3, "backoffDelay": "PT0.01S"}},
        },
        {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": "t"},
            "spec": {"broker": "b", "subscriber": {"uri": secured.url("enroll")}},
        },
    ]
    (folder / "eventing.yaml").write_text(yaml.safe_dump_all(documents), "utf-8")
    settings = Settings.from_env({}, data_dir=tmp_path / "data", eventing_dir=folder)
    broker = LocalBroker.from_settings(settings)
    broker.start()
    try:
        event = object_event("created", "urn:test", ObjectChangeData("faces", "x/1.jpg", etag="1"))
        broker.ingest(from_http(*to_binary(event)))
        letter = tmp_path / "data" / "broker" / "dead-letter" / "t" / f"{event['id']}.json"
        deadline = time.monotonic() + WAIT_S
        while not letter.exists():
            assert time.monotonic() < deadline, "not dead-lettered"
            time.sleep(0.02)
    finally:
        broker.stop(grace=2.0)
    details = json.loads(letter.read_text("utf-8"))
    assert (details["last_status"], details["attempts"]) == (401, 1)
    assert details["reason"] == "not retryable"


def test_the_event_source_presents_the_token_to_its_sink(secured: Secured) -> None:
    """A sink that is a function itself (no broker between) gets the token from the source."""
    store = FolderStore(secured.data_dir / "buckets")
    etag = store.stat("faces", "astronaut/eileen.jpg").etag
    change = Change.created("faces", "astronaut/eileen.jpg", etag)
    with_token = Settings(data_dir=secured.data_dir, api_token=TOKEN)
    assert Emitter(secured.url("enroll"), with_token, attempts=1).emit(change) == "emitted"
    with pytest.raises(DeliveryError, match="401"):
        Emitter(secured.url("enroll"), Settings(data_dir=secured.data_dir), attempts=1).emit(change)


def test_authorization_header_is_absent_without_a_token() -> None:
    assert authorization_header("") == {}
    assert authorization_header(TOKEN) == {"Authorization": f"Bearer {TOKEN}"}
