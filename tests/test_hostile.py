"""The hostile corpus against the running pipeline: refused everywhere, nothing dies or changes.

One pipeline per model set-up (enroll, broker, event source, predictor as real processes, see
:mod:`tests.plugins.pipeline`) over a gallery holding one enrolled face: on the fallback
models, then on the default ones (:class:`tests.plugins.pretrained.Served`). Every item of the
corpus (:mod:`tests.plugins.hostile`) goes through the enroll function over HTTP, the event
source (folder watcher and MinIO webhook), the predictor (V1 and V2) and the CLI (``detect``,
``embed``, ``query``, ``upload``, ``gallery rm``). Each must get its typed refusal, and after
each the processes still answer their health checks and the gallery and model buckets are the
same bytes as before.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import numpy as np
import pytest
import requests
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from facerank.cehttp import from_http, json_data, to_binary
from facerank.cli.main import main as facerank_main
from facerank.errors import InvalidIdentityError
from facerank.events import FACE_REJECTED, ObjectChangeData, object_event
from facerank.gallery import normalise_identity
from facerank.storage import FolderStore
from facerank.storage.keys import shown
from tests.plugins.enroller import Enroller
from tests.plugins.faces import encode
from tests.plugins.hostile import (
    INVALID_KEY,
    HostileFile,
    HostileName,
    creatable,
    hostile_files,
    hostile_names,
    store_digest,
)
from tests.plugins.pipeline import Pipeline, running_pipeline
from tests.plugins.pretrained import Served
from tests.plugins.sink import EventSink

pytestmark = pytest.mark.slow

KEPT = ("gallery", "models")
"""What hostile input must never change: enrolled faces and the model registry."""
FILES = hostile_files()
NAMES = hostile_names()
WAIT_S = 30.0
SOURCE = "file:///hostile/faces"
MINIO_ETAG = "1" * 32


@dataclass
class Stage:
    """The module's running pipeline, its store, and the state it must keep."""

    pipeline: Pipeline
    store: FolderStore
    baseline: dict[tuple[str, str], str]
    tap: EventSink
    face_photo: bytes

    def assert_unharmed(self) -> None:
        """Every process up, gallery and models unchanged, and nothing dead-lettered: hostile
        input is a verdict (``face.rejected``), never a delivery failure."""
        assert self.pipeline.healthy() == dict.fromkeys(self.pipeline.components, True)
        assert store_digest(self.store, KEPT) == self.baseline
        dead = Path(self.pipeline.env["FACERANK_DATA_DIR"]) / "broker" / "dead-letter"
        assert not list(dead.glob("*/*.json"))

    def rejections(self, keys: set[str], etag: str | None = None) -> dict[str, str]:
        """``key -> reason`` of the rejections enroll answered for ``keys`` (in version
        ``etag``, if given), once all of them came."""

        def seen() -> dict[str, str]:
            found = {}
            for event in self.tap.events:
                data = event.get_data()
                if event["type"] != FACE_REJECTED or data.get("key") not in keys:
                    continue
                if etag is None or data.get("etag") == etag:
                    found[data["key"]] = data["reason"]
            return found

        deadline = time.monotonic() + WAIT_S
        while set(found := seen()) != keys:
            assert time.monotonic() < deadline, f"no rejection yet for {keys - set(found)}"
            time.sleep(0.05)
        return found


@pytest.fixture(scope="module")
def stage(
    tmp_path_factory: pytest.TempPathFactory,
    astronaut: np.ndarray,
    sink_server: EventSink,
    served: Served,
) -> Iterator[Stage]:
    """The pipeline on the fallback models, then on the default ones (``served``)."""
    data_dir = tmp_path_factory.mktemp(f"hostile-{served.name}") / "data"
    Enroller(served.settings(data_dir)).add("astronaut/eileen.jpg", astronaut)
    store = FolderStore(data_dir / "buckets")
    sink_server.reset()
    with running_pipeline(
        data_dir, tap_url=sink_server.url, tap_type=FACE_REJECTED, env=served.env
    ) as pipeline:
        yield Stage(
            pipeline, store, store_digest(store, KEPT), sink_server, encode(astronaut, "JPEG")
        )


def reply_of(response: requests.Response) -> CloudEvent:
    assert response.status_code == 200, response.text
    reply = from_http(response.headers, response.content)
    return CloudEvent(dict(reply.get_attributes()), json_data(reply))


def post_event(url: str, event: CloudEvent, *, structured: bool = False) -> requests.Response:
    headers, body = to_structured(event) if structured else to_binary(event)
    return requests.post(url, data=body, headers=headers, timeout=60)


# --- the enroll function, over HTTP --------------------------------------------------------


@pytest.mark.parametrize("item", FILES, ids=[f.name for f in FILES])
def test_enroll_function_rejects_hostile_files(stage: Stage, item: HostileFile) -> None:
    key = f"direct/{item.name}.jpg"
    etag = stage.store.put("faces", key, item.data).etag
    event = object_event("created", SOURCE, ObjectChangeData("faces", key, etag=etag))
    reply = reply_of(post_event(stage.pipeline.url("enroll"), event))
    assert reply["type"] == FACE_REJECTED
    assert reply.get_data()["reason"] in item.codes
    stage.assert_unharmed()


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
@pytest.mark.parametrize("name", NAMES, ids=[n.label for n in NAMES])
def test_enroll_function_rejects_hostile_names(
    stage: Stage, name: HostileName, structured: bool
) -> None:
    event = object_event("created", SOURCE, ObjectChangeData("faces", name.key, etag="0" * 32))
    reply = reply_of(post_event(stage.pipeline.url("enroll"), event, structured=structured))
    assert reply["type"] == FACE_REJECTED
    assert reply.get_data()["reason"] in name.codes
    stage.assert_unharmed()


# --- the event source: folder watcher and MinIO webhook ------------------------------------


def test_uploaded_hostile_files_come_back_as_rejection_events(stage: Stage, tmp_path: Path) -> None:
    """``facerank upload`` -> faces folder -> watcher -> broker -> enroll -> face.rejected."""
    folder = tmp_path / "uploaded"
    folder.mkdir()
    for item in FILES:
        (folder / f"{item.name}.jpg").write_bytes(item.data)
    result = subprocess.run(
        [sys.executable, "-m", "facerank.cli.main", "upload", str(folder)],
        env={**os.environ, **stage.pipeline.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"uploaded {len(FILES)} photo(s)" in result.stdout
    reasons = stage.rejections({f"uploaded/{item.name}.jpg" for item in FILES})
    for item in FILES:
        assert reasons[f"uploaded/{item.name}.jpg"] in item.codes, item.name
    stage.assert_unharmed()


def test_hostile_names_dropped_into_the_folder_are_refused(
    stage: Stage, capfd: pytest.CaptureFixture[str]
) -> None:
    """Files the OS lets exist under hostile names, holding a real face: never enrolled."""
    faces = stage.store.root / "faces"
    dropped = [name for name in NAMES if creatable(name)]
    assert len(dropped) >= 8
    capfd.readouterr()
    for name in dropped:
        path = faces / name.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(stage.face_photo)
    # The others come back from enroll as rejections.
    emitted = {n.key for n in dropped if n.codes != INVALID_KEY and _emitted(n)}
    reasons = stage.rejections(emitted, hashlib.md5(stage.face_photo).hexdigest())  # noqa: S324
    assert set(reasons.values()) <= {"invalid_identity"}
    # Invalid keys are refused by the source itself: its log line for each is the refusal
    # observed (relayed by the supervisor into this test's captured output).
    refused = [n for n in dropped if n.codes == INVALID_KEY and _emitted(n)]
    assert refused
    output = ""
    deadline = time.monotonic() + WAIT_S
    while missing := [
        n.key for n in refused if f"rejected change: key {shown(n.key)}" not in output
    ]:
        assert time.monotonic() < deadline, f"the source never refused {missing}"
        time.sleep(0.05)
        output += capfd.readouterr().err
    stage.assert_unharmed()


def _emitted(name: HostileName) -> bool:
    """Whether the source forwards a change of this key (dot folders are never photos)."""
    return not any(segment.startswith(".") for segment in name.key.split("/"))


def test_minio_notifications_of_hostile_keys(stage: Stage) -> None:
    records = [
        {
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "bucket": {"name": "faces"},
                "object": {"key": quote_plus(name.key, safe=""), "eTag": MINIO_ETAG, "size": 9},
            },
        }
        for name in NAMES
    ]
    response = requests.post(
        f"{stage.pipeline.url('source')}/minio", json={"Records": records}, timeout=30
    )
    assert response.status_code == 200, response.text
    invalid_keys = [n for n in NAMES if n.codes == INVALID_KEY]
    emitted = [n for n in NAMES if n.codes != INVALID_KEY and _emitted(n)]
    assert response.json() == {
        "emitted": len(emitted),
        "ignored": len(NAMES) - len(invalid_keys) - len(emitted),
        "rejected": len(invalid_keys),
    }
    reasons = stage.rejections({n.key for n in emitted}, MINIO_ETAG)
    assert set(reasons.values()) == {"invalid_identity"}
    stage.assert_unharmed()


# --- the predictor, V1 and V2 --------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _expect_refusal_or_no_face(response: requests.Response, item: HostileFile) -> Any:
    if item.decodes:
        assert response.status_code == 200, response.text
        return response.json()
    assert response.status_code == 400, response.text
    assert any(code in response.json()["error"] for code in item.codes), response.text
    return None


@pytest.mark.parametrize("item", FILES, ids=[f.name for f in FILES])
def test_predictor_v1_and_v2_refuse_or_find_no_face(stage: Stage, item: HostileFile) -> None:
    url = stage.pipeline.url("predictor")
    v1 = requests.post(
        f"{url}/v1/models/facerank:predict",
        json={"instances": [{"image": {"b64": _b64(item.data)}}]},
        timeout=60,
    )
    if (body := _expect_refusal_or_no_face(v1, item)) is not None:
        assert body["predictions"][0]["faces"] == []
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [_b64(item.data)]}
    v2 = requests.post(f"{url}/v2/models/facerank/infer", json={"inputs": [tensor]}, timeout=60)
    if (body := _expect_refusal_or_no_face(v2, item)) is not None:
        assert {o["name"]: o["data"] for o in body["outputs"]}["box"] == []
    stage.assert_unharmed()


def test_v2_request_ids_with_hostile_names_are_echoed_as_data(stage: Stage) -> None:
    image = next(item.data for item in FILES if item.name == "1x1-png")
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [_b64(image)]}
    for name in NAMES:
        body = {"id": name.key, "inputs": [tensor]}
        response = requests.post(
            f"{stage.pipeline.url('predictor')}/v2/models/facerank/infer", json=body, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.json()["id"] == name.key
    stage.assert_unharmed()


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every hostile file on disk as ``<name>.jpg``, as a user would hand them to the CLI."""
    folder = tmp_path_factory.mktemp("corpus")
    paths = {}
    for item in FILES:
        paths[item.name] = folder / f"{item.name}.jpg"
        paths[item.name].write_bytes(item.data)
    return paths


@pytest.mark.parametrize("command", [["detect"], ["embed", "--json"]], ids=["detect", "embed"])
def test_detect_and_embed_report_each_file_and_go_on(
    stage: Stage, corpus_files: dict[str, Path], command: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "facerank.cli.main", *command, *map(str, corpus_files.values())],
        env={**os.environ, **stage.pipeline.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # some failed, none crashed the batch
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(p) for p in corpus_files.values()]
    for item, line in zip(FILES, lines, strict=True):
        if "error" in line:
            assert line["error"]["code"] in item.codes, (item.name, line)
        else:
            assert item.decodes, (item.name, line)
            assert line["faces"] == [], (item.name, line)


def test_query_refuses_or_finds_no_face(
    stage: Stage,
    corpus_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = stage.pipeline.url("predictor")
    monkeypatch.setenv("FACERANK_DATA_DIR", stage.pipeline.env["FACERANK_DATA_DIR"])
    for item in FILES:
        status = facerank_main(["query", str(corpus_files[item.name]), "--json", "--url", url])
        out, err = capsys.readouterr()
        if item.decodes:
            assert status == 0, err
            assert json.loads(out)["faces"] == []
        else:
            assert status == 2, out
            assert "predictor_error" in err
            assert any(code in err for code in item.codes), err
    stage.assert_unharmed()


def _identity_refused(name: HostileName) -> bool:
    try:
        normalise_identity(name.identity)
    except InvalidIdentityError:
        return True
    return False


def test_upload_and_gallery_rm_refuse_hostile_identities(
    stage: Stage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FACERANK_DATA_DIR", stage.pipeline.env["FACERANK_DATA_DIR"])
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(stage.face_photo)
    faces_before = store_digest(stage.store, ["faces"])
    refused = [name for name in NAMES if _identity_refused(name)]
    assert len(refused) >= 10
    for name in refused:
        assert facerank_main(["upload", str(photo), "--identity", name.identity]) == 1
        assert "identity" in capsys.readouterr().err
        assert facerank_main(["gallery", "rm", name.identity, "--yes"]) == 2
        assert "invalid_identity" in capsys.readouterr().err
    # Names whose identity is fine but whose file name is not: refused before any upload.
    folder = tmp_path / "alice"
    for name in NAMES:
        rest = name.key.partition("/")[2]
        if not _identity_refused(name) and creatable(name) and "/" not in rest and rest:
            (folder / rest).parent.mkdir(parents=True, exist_ok=True)
            (folder / rest).write_bytes(stage.face_photo)
    assert list(folder.iterdir()), "no hostile file name the OS can hold"
    assert facerank_main(["upload", str(folder)]) == 1
    capsys.readouterr()
    assert store_digest(stage.store, ["faces"]) == faces_before
    stage.assert_unharmed()
