"""``facerank upload`` and ``facerank gallery ls|rm`` as real processes, on both store backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from facerank.gallery import EnrolledFace, Gallery, SourceRecord, face_id
from facerank.registry import ModelRef, ModelRegistry
from facerank.storage import FolderStore, ObjectStore, S3Store
from tests.plugins.cli import run_facerank
from tests.plugins.s3_server import S3_ACCESS_KEY, S3_SECRET_KEY


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Two identity folders as a user would have them, with things that are not photos."""
    root = tmp_path / "photos"
    for name, files in {"alice": ["1.jpg", "holiday/2.png"], "bob": ["1.jpg"]}.items():
        for file in files:
            path = root / name / file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{name}/{file}".encode())
    (root / "alice" / ".DS_Store").write_bytes(b"finder")
    (root / "alice" / "notes.txt").write_text("not a photo")
    return root


@pytest.fixture(params=["folder", "s3"])
def cli_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ObjectStore, dict[str, str]]:
    """A store and the environment that points the CLI at it."""
    if request.param == "folder":
        return FolderStore(tmp_path / "data" / "buckets"), {}
    s3: S3Store = request.getfixturevalue("s3_store")
    endpoint = request.getfixturevalue("s3_server")
    env = {
        "FACERANK_STORE": "s3",
        "FACERANK_S3_ENDPOINT": endpoint,
        "FACERANK_S3_ACCESS_KEY": S3_ACCESS_KEY,
        "FACERANK_S3_SECRET_KEY": S3_SECRET_KEY,
    }
    return s3, env


def keys(store: ObjectStore, bucket: str) -> list[str]:
    return [info.key for info in store.list(bucket)]


def test_upload_identity_folders(
    photos: Path, tmp_path: Path, cli_store: tuple[ObjectStore, dict[str, str]]
) -> None:
    store, env = cli_store
    result = run_facerank(
        "upload", str(photos / "alice"), str(photos / "bob"), data_dir=tmp_path / "data", env=env
    )
    assert keys(store, "faces") == ["alice/1.jpg", "alice/holiday/2.png", "bob/1.jpg"]
    assert store.get("faces", "alice/holiday/2.png").data == b"alice/holiday/2.png"
    assert store.stat("faces", "alice/1.jpg").content_type == "image/jpeg"
    assert "uploaded 3 photo(s) of 2 identities" in result.stdout


def test_upload_files_need_an_identity(photos: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    photo = str(photos / "bob" / "1.jpg")
    refused = run_facerank("upload", photo, data_dir=data, check=False)
    assert refused.returncode == 1
    assert "needs --identity" in refused.stderr
    run_facerank("upload", photo, "--identity", "Robert  Smith", data_dir=data)
    assert keys(FolderStore(data / "buckets"), "faces") == ["Robert Smith/1.jpg"]


@pytest.mark.parametrize("identity", ["..", "a/b", "x" * 100, "bad\x07bell"])
def test_upload_refuses_unusable_identities_before_sending(
    photos: Path, tmp_path: Path, identity: str
) -> None:
    data = tmp_path / "data"
    result = run_facerank(
        "upload", str(photos / "alice"), "--identity", identity, data_dir=data, check=False
    )
    assert result.returncode == 1
    assert "identity" in result.stderr
    assert keys(FolderStore(data / "buckets"), "faces") == []


def enroll(gallery: Gallery, key: str) -> None:
    record = SourceRecord(
        identity=key.split("/")[0],
        bucket="faces",
        key=key,
        etag="e",
        faces_seen=1,
        enrolled_at=datetime.now(UTC),
        faces=(EnrolledFace(face_id("faces", key, "e", 0), (0, 0, 50, 50), 0.99, "eyes"),),
    )
    crop = np.zeros((256, 256, 3), np.uint8)
    gallery.enroll(record, [crop], {"lbp-v0": np.ones((1, 8), np.float32) / np.sqrt(8)})


def test_gallery_ls_and_rm(
    photos: Path, tmp_path: Path, cli_store: tuple[ObjectStore, dict[str, str]]
) -> None:
    store, env = cli_store
    data = tmp_path / "data"
    run_facerank("upload", str(photos / "alice"), str(photos / "bob"), data_dir=data, env=env)
    gallery = Gallery(store, "gallery")
    gallery.ensure()
    for key in keys(store, "faces"):
        enroll(gallery, key)
    registry = ModelRegistry(store, "models")  # as the enroll function's first event does
    registry.ensure()
    registry.bootstrap(ModelRef("lbp-v0"))

    listing = json.loads(run_facerank("gallery", "ls", "--json", data_dir=data, env=env).stdout)
    assert listing == {
        "model_version": "lbp-v0",
        "identities": [{"identity": "alice", "faces": 2}, {"identity": "bob", "faces": 1}],
    }
    assert "2 identities, 3 faces" in run_facerank("gallery", "ls", data_dir=data, env=env).stdout

    unconfirmed = run_facerank("gallery", "rm", "alice", data_dir=data, env=env, check=False)
    assert unconfirmed.returncode == 1
    assert gallery.identities() == {"alice": 2, "bob": 1}

    removed = run_facerank("gallery", "rm", "alice", "--yes", data_dir=data, env=env)
    assert "2 photo(s), 2 enrolled face(s)" in removed.stdout
    assert keys(store, "faces") == ["bob/1.jpg"]
    assert gallery.identities() == {"bob": 1}
