"""Un-enrolling a person leaves no trace of them in the store, in any model version.

Three people are enrolled, the gallery is switched to a second model version (so every face
has two embeddings), and one more photo is enrolled under the new version. Then one person is
removed with ``facerank gallery rm`` (as a subprocess, as an operator runs it) and another by
deleting their only photo, the way a user or a bucket lifecycle rule would. Afterwards no
object key and no object's bytes, anywhere in the store, may carry their names, photo keys,
source or face ids, photo versions or photos; on the folder store that includes every file on
disk, the store's own metadata files too. The third person must be untouched, both versions
of their embedding included, so a store wiped clean would fail this test too.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facerank.events import ObjectChange, ObjectChangeData, object_event
from facerank.gallery import Gallery
from facerank.registry import ModelRef, ServingModels, switch_model
from facerank.settings import Settings
from facerank.storage import FolderStore, ObjectStore, S3Store
from functions.enroll.handler import EnrollHandler, build_handler
from tests.plugins.enroller import lfw_photo
from tests.plugins.faces import encode
from tests.plugins.s3_server import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.test_registry import NEW, ProjectedLbp, loader

OLD = "lbp-v0"
REMOVED = "Zoë Removed-Q7"
"""Removed with ``facerank gallery rm``; a name no random byte string will contain."""
DELETED = "Bob Deleted-K3"
"""Removed by deleting the photo."""
KEPT = "Carol Kept-M5"
BUCKETS = ("faces", "gallery", "models", "dead-letter")


@pytest.fixture(params=["folder", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ObjectStore, dict]]:
    """A store of each kind, with the environment that points the CLI at it."""
    if request.param == "folder":
        yield FolderStore(tmp_path / "buckets"), {}
        return
    store: S3Store = request.getfixturevalue("s3_store")
    endpoint = request.getfixturevalue("s3_server")
    yield (
        store,
        {
            "FACERANK_STORE": "s3",
            "FACERANK_S3_ENDPOINT": endpoint,
            "FACERANK_S3_ACCESS_KEY": S3_ACCESS_KEY,
            "FACERANK_S3_SECRET_KEY": S3_SECRET_KEY,
        },
    )


def deliver(handler: EnrollHandler, kind: ObjectChange, key: str, etag: str = "") -> str:
    data = ObjectChangeData("faces", key, etag=etag)
    return handler.handle(object_event(kind, "urn:test", data)).verdict


def traces(gallery: Gallery, identity: str, photos: dict[str, bytes]) -> set[bytes]:
    """Every string that would betray that ``identity`` was ever enrolled."""
    found = {identity.encode(), identity.encode("unicode_escape")}
    for record in gallery.records(identity):
        found |= {record.key.encode(), record.etag.encode(), record.source_id.encode()}
        found |= {face.face_id.encode() for face in record.faces}
    found |= {hashlib.sha256(photo).hexdigest().encode() for photo in photos.values()}
    return found


def leaks(store: ObjectStore, traces: set[bytes], photos: list[bytes]) -> list[str]:
    """Where any trace is still found: object keys and bytes, and on a folder store any file."""
    found = []
    for bucket in BUCKETS:
        store.ensure_bucket(bucket)
        for info in store.list(bucket):
            data = store.get(bucket, info.key).data
            found += [f"{bucket}/{info.key}" for t in traces if t in info.key.encode() + data]
            found += [f"{bucket}/{info.key} is a deleted photo" for p in photos if data == p]
    if isinstance(store, FolderStore):
        for path in store.root.rglob("*"):
            content = path.read_bytes() if path.is_file() else b""
            found += [str(path) for t in traces if t in os.fsencode(path) + content]
    return found


@pytest.fixture(params=["lbp-v0", "dlib-r34-v1"], ids=["fallback", "default"])
def old_model(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """The model the gallery starts with: the fallback, and the default with landmarks."""
    if request.param == "lbp-v0":
        return Settings(data_dir=tmp_path, model=OLD), {}
    cache = request.getfixturevalue("pretrained_settings").cache_dir
    settings = Settings(data_dir=tmp_path, model=request.param, cache_dir=cache)
    return settings, {"FACERANK_CACHE_DIR": str(cache)}


def test_unenrolled_people_leave_no_trace_in_any_model_version(
    backend: tuple[ObjectStore, dict],
    old_model: tuple[Settings, dict[str, str]],
    tmp_path: Path,
    astronaut: np.ndarray,
    lfw_faces: np.ndarray,
) -> None:
    store, store_env = backend
    settings, model_env = old_model
    old = settings.model
    handler = build_handler(settings, store)
    handler.models = ServingModels(handler.models.registry, settings, load=loader)
    store.ensure_bucket("faces")
    handler.gallery.ensure()
    photos = {
        f"{REMOVED}/1.jpg": encode(astronaut, "JPEG", quality=90),
        f"{REMOVED}/2.jpg": encode(np.ascontiguousarray(astronaut[:, ::-1]), "JPEG", quality=90),
        f"{DELETED}/1.jpg": encode(lfw_photo(lfw_faces, 1), "JPEG", quality=90),
        f"{KEPT}/1.jpg": encode(lfw_photo(lfw_faces, 2), "JPEG", quality=90),
    }
    for key, photo in photos.items():
        assert deliver(handler, "created", key, store.put("faces", key, photo).etag) == "enrolled"
    gallery, registry = handler.gallery, handler.models.registry
    switch_model(registry, gallery, ModelRef(NEW), ProjectedLbp(), settings=settings, reason="test")
    late = encode(lfw_photo(lfw_faces, 5), "JPEG", quality=90)
    photos[f"{REMOVED}/3.jpg"] = late  # enrolled under the new version only
    late_etag = store.put("faces", f"{REMOVED}/3.jpg", late).etag
    assert deliver(handler, "created", f"{REMOVED}/3.jpg", late_etag) == "enrolled"

    first = gallery.record("faces", f"{REMOVED}/1.jpg")
    assert first is not None
    assert {key.rsplit("/", 1)[1] for key in gallery.face_keys(first.faces[0].face_id)} == {
        "crop.png",
        f"{old}.f32",
        f"{NEW}.f32",
    }
    gone = traces(gallery, REMOVED, {k: v for k, v in photos.items() if k.startswith(REMOVED)})
    gone |= traces(gallery, DELETED, {k: v for k, v in photos.items() if k.startswith(DELETED)})
    kept = [gallery.face_keys(f.face_id) for r in gallery.records(KEPT) for f in r.faces]

    result = subprocess.run(
        [sys.executable, "-m", "facerank.cli.main", "gallery", "rm", REMOVED, "--yes"],
        env={**os.environ, "FACERANK_DATA_DIR": str(tmp_path), **store_env, **model_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "3 photo(s), 3 enrolled face(s)" in result.stdout
    store.delete("faces", f"{DELETED}/1.jpg")
    assert deliver(handler, "deleted", f"{DELETED}/1.jpg") == "removed"

    deleted_photos = [v for k, v in photos.items() if not k.startswith(KEPT)]
    assert leaks(store, gone, deleted_photos) == []
    assert gallery.identities() == {KEPT: 1}
    [record] = gallery.records(KEPT)
    assert set(record.model_versions) == {old, NEW}
    assert [gallery.face_keys(f.face_id) for f in record.faces] == kept


def test_a_photo_deleted_by_hand_takes_its_store_metadata_along(
    tmp_path: Path, lfw_faces: np.ndarray
) -> None:
    """``rm`` in the faces folder: the folder store's sidecar named the photo; it goes too."""
    store = FolderStore(tmp_path / "buckets")
    handler = build_handler(Settings(data_dir=tmp_path, model=OLD), store)
    store.ensure_bucket("faces")
    handler.gallery.ensure()
    path = store.root / "faces" / DELETED / "by-hand.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(encode(lfw_photo(lfw_faces, 3), "JPEG", quality=90))
    etag = store.stat("faces", f"{DELETED}/by-hand.jpg").etag  # hashed once, remembered
    assert deliver(handler, "created", f"{DELETED}/by-hand.jpg", etag) == "enrolled"
    gone = traces(handler.gallery, DELETED, {})
    path.unlink()
    path.parent.rmdir()
    assert deliver(handler, "deleted", f"{DELETED}/by-hand.jpg") == "removed"
    assert leaks(store, gone | {b"by-hand.jpg"}, []) == []
