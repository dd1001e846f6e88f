"""The web page's unknown groups: listed with their faces, named by a person (with the token).

The page runs in a real server thread over a folder store holding real unknown faces; naming
goes through the same code as ``facerank unknown name``, so the photos land in the faces
bucket for the event path to enroll.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from facerank.faces.align import GALLERY_CROP_256
from facerank.settings import Settings
from facerank.storage import FolderStore
from facerank.unknown import NewFace, UnknownFace, UnknownFaces
from inference.web import create_app
from tests.plugins.http import serving

TOKEN = "web-test-token-0123456789"


@dataclass
class Page:
    url: str
    store: FolderStore


def unit(angle: float) -> np.ndarray:
    vector = np.zeros(8, np.float32)
    vector[:2] = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    return vector


@pytest.fixture(params=["", TOKEN], ids=["open", "token"])
def page(request: pytest.FixtureRequest, tmp_path: Path, astronaut: np.ndarray) -> Iterator[Page]:
    settings = Settings(data_dir=tmp_path, api_token=request.param)
    store = FolderStore(settings.buckets_dir)
    for bucket in ("faces", "queries", "gallery"):
        store.ensure_bucket(bucket)
    crop = np.ascontiguousarray(astronaut[:256, 128:384])
    assert crop.shape[0] == GALLERY_CROP_256.size
    unknown = UnknownFaces(store, "gallery")
    faces = []
    for i, angle in enumerate((0.0, 10.0, 120.0)):
        key = f"party/{i}.jpg"
        store.put("queries", key, f"photo {i}".encode())
        face = UnknownFace(f"{i:024x}-0", "queries", key, "e", (1, 2, 30, 30))
        faces.append(NewFace(face, crop, {"v": unit(angle)}))
    unknown.add(faces, embedders={}, active="v", threshold=0.5)
    with serving(create_app(settings, store, "http://127.0.0.1:9")) as url:
        yield Page(url, store)


def test_groups_are_listed_with_their_faces(page: Page) -> None:
    html = requests.get(f"{page.url}/unknown", timeout=10).text
    assert 'data-testid="group-g1"' in html
    assert 'data-testid="group-g2"' in html
    assert "2 faces, 2 photos" in html
    assert html.count("/unknown/faces/") == 3
    crop = requests.get(f"{page.url}/unknown/faces/{0:024x}-0/crop.png", timeout=10)
    assert crop.status_code == 200
    assert crop.headers["content-type"] == "image/png"
    assert requests.get(f"{page.url}/unknown/faces/..%2Fx/crop.png", timeout=10).status_code == 404


def test_naming_a_group_copies_its_photos_for_enrollment(page: Page) -> None:
    form = {"identity": "Ada Lovelace", "token": TOKEN}
    answer = requests.post(f"{page.url}/unknown/g1/name", data=form, timeout=10)
    assert answer.status_code == 200  # after the 303 back to the list
    assert 'data-testid="named"' in answer.text
    assert "Group g1 named Ada Lovelace" in answer.text
    keys = sorted(info.key for info in page.store.list("faces"))
    assert keys == ["Ada Lovelace/named/party/0.jpg", "Ada Lovelace/named/party/1.jpg"]
    assert 'data-testid="group-g1"' not in answer.text
    again = requests.post(f"{page.url}/unknown/g1/name", data=form, timeout=10)
    assert again.status_code == 404


def test_a_bad_name_is_refused_and_changes_nothing(page: Page) -> None:
    form = {"identity": "../../etc", "token": TOKEN}
    answer = requests.post(f"{page.url}/unknown/g1/name", data=form, timeout=10)
    assert answer.status_code == 400
    assert list(page.store.list("faces")) == []


def test_with_a_token_set_naming_requires_it(page: Page) -> None:
    html = requests.get(f"{page.url}/unknown", timeout=10).text
    token_set = 'name="token"' in html
    answer = requests.post(
        f"{page.url}/unknown/g2/name", data={"identity": "Eve", "token": "wrong"}, timeout=10
    )
    if token_set:
        assert answer.status_code == 403
        assert list(page.store.list("faces")) == []
    else:
        assert answer.status_code == 200
        assert [info.key for info in page.store.list("faces")] == ["Eve/named/party/2.jpg"]
