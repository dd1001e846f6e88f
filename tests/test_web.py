"""The web page as visitors meet it: served over HTTP, backed by a real predictor process.

The predictor is the one ``tests/test_predictor.py`` starts (``python -m inference`` over a
folder-store gallery enrolled through the real enroll handler), reused rather than rebuilt so
both suites exercise the same serving setup. The page runs in a real server thread and, where
Chromium is installed, in a headless browser that uploads a photo and reads the result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import requests

from facerank.gallery.records import SourceRecord
from facerank.settings import Settings
from facerank.storage import FolderStore
from inference.web import create_app
from tests.plugins.http import serving
from tests.test_predictor import (  # noqa: F401  (module-scoped fixtures, reused)
    MAX_IMAGE_BYTES,
    Server,
    astronaut_query,
    lfw_photo,
    server,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = "<script>alert(1)</script>"
"""Not a valid identity, so only a tampered record can carry it: the page must still escape it."""
QUOTED_NAME = "O'Brien"


def settings() -> Settings:
    return Settings(max_image_bytes=MAX_IMAGE_BYTES)


@pytest.fixture(scope="module")
def web(server: Server, lfw_faces: np.ndarray) -> Iterator[str]:  # noqa: F811
    """Base URL of the page over the predictor's gallery, plus two awkward identity names."""
    server.enroller.add(f"{QUOTED_NAME}/1.jpg", lfw_photo(lfw_faces, 6))
    tampered = SourceRecord(HOSTILE, "faces", "x/1.jpg", "etag", 0, datetime.now(UTC), ())
    body = json.dumps(tampered.to_json()).encode()
    server.enroller.store.put("gallery", f"identities/x/{tampered.source_id}.json", body)
    app = create_app(settings(), server.enroller.store, server.url)
    with serving(app) as url:
        yield url


def query(url: str, image: bytes) -> requests.Response:
    return requests.post(
        f"{url}/api/query", files={"image": ("photo.jpg", image, "image/jpeg")}, timeout=60
    )


def test_query_ranks_the_astronaut_with_links(web: str, astronaut_query: bytes) -> None:  # noqa: F811
    response = query(web, astronaut_query)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["model_version"] == "lbp-v0"
    [face] = reply["faces"]
    top = face["matches"][0]
    assert top["identity"] == "astronaut"
    assert len(face["matches"]) == 3
    crop = requests.get(web + top["crop_url"], timeout=10)
    assert crop.status_code == 200
    assert crop.headers["Content-Type"] == "image/png"
    assert crop.content.startswith(b"\x89PNG")
    assert "immutable" in crop.headers["Cache-Control"]
    revalidated = {"If-None-Match": crop.headers["ETag"]}
    cached = requests.get(web + top["crop_url"], headers=revalidated, timeout=10)
    assert cached.status_code == 304
    identity = requests.get(web + top["identity_url"], timeout=10)
    assert identity.status_code == 200
    assert top["crop_url"] in identity.text


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        ({"image": ("x.jpg", b"hello, I am not an image", "image/jpeg")}, 400, "not_an_image"),
        ({}, 400, "Choose an image"),
        ({"image": ("big.jpg", bytes(MAX_IMAGE_BYTES + 1), "image/jpeg")}, 413, "limit"),
        ({"image": ("huge.jpg", bytes(2 * MAX_IMAGE_BYTES), "image/jpeg")}, 413, "limit"),
    ],
    ids=["not an image", "no file", "over the limit", "over the request cap"],
)
def test_bad_uploads_say_why(web: str, files: dict, status: int, message: str) -> None:
    response = requests.post(f"{web}/api/query", files=files, timeout=30)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_predictor_down_answers_503(
    server: Server,  # noqa: F811
    astronaut_query: bytes,  # noqa: F811
    free_port: Callable[[], int],
) -> None:
    app = create_app(settings(), server.enroller.store, f"http://127.0.0.1:{free_port()}")
    with serving(app) as url:
        response = query(url, astronaut_query)
    assert response.status_code == 503
    assert "not reachable" in response.json()["error"]


def test_gallery_nobody_enrolled_into_is_empty_not_an_error(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    app = create_app(settings(), FolderStore(tmp_path), f"http://127.0.0.1:{free_port()}")
    with serving(app) as url:
        listing = requests.get(f"{url}/identities", timeout=10)
        crop = requests.get(f"{url}/faces/{'0' * 24}-0/crop.png", timeout=10)
    assert listing.status_code == 200
    assert "Nobody is enrolled yet" in listing.text
    assert crop.status_code == 404


@pytest.mark.parametrize(
    "face_id",
    [
        "%2e%2e%2f%2e%2e%2fidentities",
        "..",
        "ABCDEF",
        "0" * 24 + "-0",
        "0" * 24 + "-0.png",
        "%3Cb%3E",
    ],
)
def test_hostile_or_unknown_face_ids_are_404(web: str, face_id: str) -> None:
    response = requests.get(f"{web}/faces/{face_id}/crop.png", timeout=10)
    assert response.status_code == 404


def test_identity_names_are_escaped_and_quoted(web: str) -> None:
    listing = requests.get(f"{web}/identities", timeout=10).text
    assert HOSTILE not in listing
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    assert f'href="/identities/{quote(HOSTILE, safe="")}"' in listing
    assert "O&#39;Brien" in listing
    page = requests.get(f"{web}/identities/{quote(QUOTED_NAME)}", timeout=10)
    assert page.status_code == 200
    assert "<h1>O&#39;Brien</h1>" in page.text
    hostile = requests.get(f"{web}/identities/{quote(HOSTILE, safe='')}", timeout=10)
    assert hostile.status_code == 404
    assert HOSTILE not in hostile.text


def test_pages_are_plain_and_locked_down(web: str) -> None:
    assert requests.get(f"{web}/healthz", timeout=10).json() == {"status": "ok"}
    page = requests.get(web, timeout=10)
    assert page.status_code == 200
    assert '<label class="drop" for="image">' in page.text
    assert '<code data-testid="gallery-model">lbp-v0</code>' in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert requests.get(f"{web}/identities/nobody", timeout=10).status_code == 404


def test_browser_queries_and_browses(
    web: str,
    astronaut_query: bytes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Upload in headless Chromium at phone width; the result must be drawn, not just sent."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: `make test` installs it when run as root")
    sync_api = pytest.importorskip("playwright.sync_api")
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_query)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 360, "height": 800},
        )
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(web)
            page.set_input_files("#image", str(photo))
            page.wait_for_selector("#boxes .box", timeout=30_000)
            wait_until_true(
                page,
                "[...document.querySelectorAll('#faces img')]"
                ".every(i => i.complete && i.naturalWidth > 0)",
            )
            box = page.locator("#boxes .box").first.bounding_box()
            shown = page.locator("#photo").bounding_box()
            assert box is not None
            assert shown is not None
            # A face-sized box, inside the photo as displayed (scaled to 360 px wide).
            assert shown["x"] < box["x"] < box["x"] + box["width"] < shown["x"] + shown["width"]
            assert shown["y"] < box["y"] < box["y"] + box["height"] < shown["y"] + shown["height"]
            assert box["width"] > 40
            assert page.locator("#faces .identity").first.text_content() == "astronaut"
            assert page.locator("#faces img").first.get_attribute("alt") == (
                "Enrolled face of astronaut"
            )
            assert page.locator("#model-version").text_content() == "lbp-v0"
            assert page.evaluate("document.documentElement.scrollWidth") <= 360
            page.screenshot(path=ARTIFACTS / "web-query.png", full_page=True)

            page.get_by_role("link", name="Identities").click()
            page.get_by_role("link", name="astronaut").click()
            wait_until_true(page, "document.querySelector('.gallery img')?.naturalWidth > 0")
            assert page.locator("h1").text_content() == "astronaut"
            page.screenshot(path=ARTIFACTS / "web-identity.png", full_page=True)
            assert problems == []
        finally:
            browser.close()


def wait_until_true(page: Any, expression: str, timeout_s: float = 30.0) -> None:
    """Poll ``expression`` from the test, one evaluation at a time.

    Not ``page.wait_for_function``: its in-page poller evaluates the predicate with ``eval``,
    which the page's Content-Security-Policy (rightly) forbids, so it fails whenever the
    condition is not already true at the first try.
    """
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        time.sleep(0.1)
