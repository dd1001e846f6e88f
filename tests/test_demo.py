"""``facerank up --demo`` data: one identity per face of the package's group photos, a query.

The package is a fake built here (group photos composed from skimage's astronaut) and placed
in the npm cache under its own integrity, exactly where a first real fetch would have put it,
with npm off the PATH: the demo must work from the cache alone.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from facerank.cli.up import print_demo, try_prepare_demo
from facerank.demo import DemoInfo, prepare_demo
from facerank.imaging import decode_image
from facerank.npm import NpmPackage, PackageUnavailableError, cache_path
from facerank.pipeline import detector_from_settings
from facerank.settings import Settings
from facerank.storage import FolderStore
from tests.plugins.faces import encode, paste_faces
from tests.test_npm import sri

GROUP_PHOTOS = {1: ([1.0, 0.7], (300, 480)), 2: ([0.8, 1.2, 0.6], (360, 720))}
"""Sample number -> head scales and canvas; Haar finds every pasted head (2 and 3)."""

EXPECTED = [
    "demo-sample1-face1",
    "demo-sample1-face2",
    "demo-sample2-face1",
    "demo-sample2-face2",
    "demo-sample2-face3",
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")


@pytest.fixture
def store(settings: Settings) -> FolderStore:
    return FolderStore(settings.buckets_dir)


@pytest.fixture
def package(
    settings: Settings, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> NpmPackage:
    """A face-api look-alike, already in the cache; npm is made unreachable to prove it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for number, (scales, canvas) in GROUP_PHOTOS.items():
            photo = encode(paste_faces(astronaut, scales, canvas), "JPEG", quality=95)
            info = tarfile.TarInfo(f"package/demo/sample{number}.jpg")
            info.size = len(photo)
            archive.addfile(info, io.BytesIO(photo))
    data = buffer.getvalue()
    fake = NpmPackage(spec="@example/face-demo@0.0.1", integrity=sri(data))
    cached = cache_path(fake.spec, fake.integrity, settings.cache_dir / "npm")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data)
    monkeypatch.setenv("PATH", "")
    return fake


def faces_in(data: bytes, settings: Settings) -> int:
    return len(detector_from_settings(settings).detect(decode_image(data).pixels))


def test_one_identity_per_face_and_a_query(
    settings: Settings, store: FolderStore, package: NpmPackage
) -> None:
    info = prepare_demo(settings, store, package)

    assert list(info.identities) == EXPECTED
    assert info.uploaded == info.identities
    keys = [o.key for o in store.list(settings.faces_bucket)]
    assert keys == [f"{identity}/enrolled.jpg" for identity in EXPECTED]
    for key in keys:  # each crop is enrollable: exactly its one face is found again
        stored = store.get(settings.faces_bucket, key)
        assert stored.info.content_type == "image/jpeg"
        assert faces_in(stored.data, settings) == 1

    assert info.expected_identity == "demo-sample1-face1"
    query = info.query_path.read_bytes()
    assert faces_in(query, settings) == 1
    assert query != store.get(settings.faces_bucket, "demo-sample1-face1/enrolled.jpg").data
    body = json.loads(info.request_path.read_text())
    assert body == {"instances": [{"image": {"b64": base64.b64encode(query).decode()}, "top_k": 3}]}


def test_rerun_uploads_and_rewrites_nothing(
    settings: Settings, store: FolderStore, package: NpmPackage
) -> None:
    first = prepare_demo(settings, store, package)
    objects = {o.key: o.last_modified for o in store.list(settings.faces_bucket)}
    files = {p: p.stat().st_mtime_ns for p in (first.query_path, first.request_path)}

    again = prepare_demo(settings, store, package)

    assert again.uploaded == ()
    assert again.identities == first.identities
    assert again.expected_identity == first.expected_identity
    assert {o.key: o.last_modified for o in store.list(settings.faces_bucket)} == objects
    assert {p: p.stat().st_mtime_ns for p in files} == files


def test_changed_photo_is_uploaded_again(
    settings: Settings, store: FolderStore, package: NpmPackage
) -> None:
    prepare_demo(settings, store, package)
    store.put(settings.faces_bucket, "demo-sample2-face3/enrolled.jpg", b"edited by someone")
    assert prepare_demo(settings, store, package).uploaded == ("demo-sample2-face3",)


def test_without_cache_or_npm_the_error_says_what_is_needed(
    settings: Settings, store: FolderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(PackageUnavailableError, match="needs npm and the npm registry once"):
        prepare_demo(settings, store)
    assert not settings.buckets_dir.exists()  # nothing uploaded, not even a bucket made


def test_up_continues_without_the_demo(
    settings: Settings,
    store: FolderStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", "")
    assert try_prepare_demo(settings, store) is None
    assert (
        "demo: not prepared, starting without it: package_unavailable:" in capsys.readouterr().err
    )


def test_up_prints_the_commands_to_try(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    demo_dir = settings.data_dir / "demo"
    info = DemoInfo((), (), demo_dir / "query.jpg", demo_dir / "query.json", "demo-sample1-face1")
    print_demo(settings.replace(predictor_port=8123), info)
    err = capsys.readouterr().err
    assert (
        f"curl -s -H 'content-type: application/json' -d @{demo_dir}/query.json "
        "http://127.0.0.1:8123/v1/models/facerank:predict"
    ) in err
    assert f"facerank query {demo_dir}/query.jpg" in err
    assert "expected top identity: demo-sample1-face1" in err
