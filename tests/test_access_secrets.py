"""Credentials never appear in logs, error messages or answers, whatever happens.

One run of the pipeline on S3 (moto's server) with every secret facerank knows set to a known
value: the API token and the S3 secret key from mounted files, the webhook token and the S3
access key from the environment, and every process logging at DEBUG. The run goes through
what produces log lines and error messages: refused requests with wrong tokens (which are
secrets too, someone else's perhaps), an enrollment from a MinIO notification, queries good and
bad, CLI commands against a dead S3 endpoint. Then every byte of every process's output, every
HTTP answer and every CLI output is searched for each secret.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
import pytest
import requests
import urllib3

from facerank.events import FACE_ENROLLED
from facerank.storage import S3Store
from tests.plugins.faces import encode
from tests.plugins.pipeline import running_pipeline
from tests.plugins.sink import EventSink

pytestmark = pytest.mark.slow

WAIT_S = 30.0


def secret(label: str) -> str:
    return f"{label}-{secrets.token_hex(12)}"


def test_no_credential_in_any_log_or_answer(
    tmp_path: Path,
    s3_server: str,
    sink_server: EventSink,
    astronaut: np.ndarray,
    capfd: pytest.CaptureFixture[str],
) -> None:
    known = {
        "api": secret("api-token"),
        "webhook": secret("webhook-token"),
        "access": secret("AKIA"),
        "s3": secret("s3-secret"),
        "wrong": secret("presented-wrong"),
    }
    files = {"api": tmp_path / "api-token", "s3": tmp_path / "s3-secret"}
    for name, path in files.items():
        path.write_text(known[name] + "\n")
    env = {
        "FACERANK_STORE": "s3",
        "FACERANK_S3_ENDPOINT": s3_server,
        "FACERANK_S3_ACCESS_KEY": known["access"],
        "FACERANK_S3_SECRET_KEY_FILE": str(files["s3"]),
        "FACERANK_API_TOKEN_FILE": str(files["api"]),
        "FACERANK_WEBHOOK_TOKEN": known["webhook"],
        "FACERANK_LOG_LEVEL": "DEBUG",
    }
    assert urllib3.request("POST", f"{s3_server}/moto-api/reset", timeout=10.0).status == 200
    store = S3Store(s3_server, known["access"], known["s3"])
    for bucket in ("faces", "gallery", "models"):
        store.ensure_bucket(bucket)
    photo = encode(astronaut, "JPEG", quality=90)
    etag = store.put("faces", "eileen/1.jpg", photo).etag
    sink_server.reset()
    answers: list[str] = []

    def call(method: str, url: str, authorization: str, **kwargs: object) -> int:
        headers = {"Authorization": authorization}
        response = requests.request(method, url, headers=headers, timeout=60, **kwargs)
        answers.append(f"{response.status_code} {response.headers} {response.text}")
        return response.status_code

    data_dir = tmp_path / "data"
    with running_pipeline(
        data_dir, tap_url=sink_server.url, tap_type=FACE_ENROLLED, env=env
    ) as pipeline:
        source, enroll = pipeline.url("source"), pipeline.url("enroll")
        predict = pipeline.url("predictor") + "/v1/models/facerank:predict"
        record = {
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "bucket": {"name": "faces"},
                "object": {"key": quote_plus("eileen/1.jpg"), "eTag": etag, "size": len(photo)},
            },
        }
        wrong, api = f"Bearer {known['wrong']}", f"Bearer {known['api']}"
        basic = "Basic " + base64.b64encode(f"sns:{known['wrong']}".encode()).decode()
        assert call("POST", f"{source}/minio", wrong, json={"Records": []}) == 401
        assert call("POST", f"{source}/sns", basic, data=b"{}") == 401
        assert call("POST", f"{source}/minio", api, json={"Records": []}) == 401
        webhook = f"Bearer {known['webhook']}"
        assert call("POST", f"{source}/minio", webhook, json={"Records": [record]}) == 200
        deadline = time.monotonic() + WAIT_S
        while not any(e.get("subject") == "eileen/1.jpg" for e in sink_server.events):
            assert time.monotonic() < deadline, "eileen was not enrolled"
            time.sleep(0.05)
        assert call("POST", enroll, wrong, data=b"{}") == 401
        assert call("POST", f"{source}/", wrong, data=b"{}") == 401
        body = {"instances": [{"image": {"b64": base64.b64encode(photo).decode()}}]}
        assert call("POST", predict, wrong, json=body) == 401
        assert call("POST", predict, api, json=body) == 200
        bad = {"instances": [{"image": {"b64": base64.b64encode(b"GIF89a junk").decode()}}]}
        assert call("POST", predict, api, json=bad) == 400
        photo_file = tmp_path / "photo.jpg"
        photo_file.write_bytes(photo)
        wrong_token = {**env, "FACERANK_API_TOKEN": known["wrong"]}  # wins over the file
        dead_s3 = {**env, "FACERANK_S3_ENDPOINT": "http://127.0.0.1:9"}
        commands = [
            (["query", str(photo_file), "--url", pipeline.url("predictor")], wrong_token),
            (["gallery", "ls"], dead_s3),
            (["upload", str(photo_file), "--identity", "x"], dead_s3),
        ]
        cli = [run_cli(args, command_env, data_dir) for args, command_env in commands]
        assert all(result.returncode != 0 for result in cli)
    logs = capfd.readouterr()  # the supervisor relayed every line before it stopped
    everything = "\n".join([logs.out, logs.err, *answers, *(r.stdout + r.stderr for r in cli)])
    # The run really produced the lines worth searching: refusals, an enrollment, errors.
    assert "no valid API token" in everything
    assert "refused a notification without a valid webhook token" in everything
    assert "enrolled" in everything
    assert "cannot reach S3" in everything
    for name, value in known.items():
        assert value not in everything, f"the {name} credential leaked"
        assert value[-12:] not in everything, f"part of the {name} credential leaked"


def run_cli(args: list[str], env: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facerank.cli.main", *args],
        env={**os.environ, **env, "FACERANK_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
