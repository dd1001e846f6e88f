"""Face images for tests: scikit-image's bundled photos plus generated variants.

Nothing is downloaded: ``astronaut`` (Eileen Collins, 512x512) and ``lfw_subset`` (100 tiny
LFW faces) ship inside scikit-image. Variants (small rotations, shifts, brightness, noise) of
distinct faces make labelled multi-identity sets for ranking tests.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

ASTRONAUT_FACE_BOX = (177, 67, 93, 93)
"""Where the face is in ``astronaut()``, checked by eye once: x, y, w, h."""


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut())


@pytest.fixture(scope="session")
def lfw_faces() -> np.ndarray:
    """The 100 face crops of ``lfw_subset`` as (100, 25, 25) uint8 grayscale."""
    return (skdata.lfw_subset()[:100] * 255).round().astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture
def astronaut_file(tmp_path: Path, astronaut: np.ndarray) -> Path:
    path = tmp_path / "astronaut.png"
    path.write_bytes(encode(astronaut))
    return path


def variant(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible re-shot of the same face: small rotation and shift, exposure, sensor noise."""
    h, w = image.shape[:2]
    angle = rng.uniform(-5, 5)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    matrix[:, 2] += rng.uniform(-0.02, 0.02, 2) * (w, h)
    moved = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
    exposed = moved.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.normal(0, 3, moved.shape)
    return np.clip(exposed, 0, 255).round().astype(np.uint8)


def labelled_chips(
    faces: np.ndarray, size: int, per_identity: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``per_identity`` variants of each face as (N, size, size, 3) RGB chips, with labels."""
    rng = np.random.default_rng(seed)
    chips, labels = [], []
    for identity, face in enumerate(faces):
        big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        for _ in range(per_identity):
            chips.append(np.repeat(variant(big, rng)[..., None], 3, axis=2))
            labels.append(identity)
    return np.stack(chips), np.array(labels)


def paste_faces(astronaut: np.ndarray, scales: list[float], canvas: tuple[int, int]) -> np.ndarray:
    """A group photo: the astronaut's head at several scales side by side on a grey canvas."""
    x, y, w, h = ASTRONAUT_FACE_BOX
    pad = w // 2
    head = astronaut[max(0, y - pad) : y + h + pad, max(0, x - pad) : x + w + pad]
    out = np.full((*canvas, 3), 128, dtype=np.uint8)
    left = 10
    for scale in scales:
        piece = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ph, pw = piece.shape[:2]
        out[10 : 10 + ph, left : left + pw] = piece
        left += pw + 10
    return out


DETECTABLE_FACES = (0, 1, 3, 5, 6, 7, 8, 10)
"""``lfw_subset`` faces Haar finds in every generated shot (checked once over 8 shots each)."""


def face_shot(face: np.ndarray, rng: np.random.Generator, *, flip: bool) -> np.ndarray:
    """A 25 px LFW face upscaled on a grey canvas, re-shot (rotation, exposure, noise), cropped
    at a random offset and optionally mirrored."""
    canvas = np.full((280, 280), 128, np.uint8)
    canvas[40:240, 40:240] = cv2.resize(face, (200, 200), interpolation=cv2.INTER_CUBIC)
    shot = variant(np.repeat(canvas[..., None], 3, axis=2), rng)
    top, left = rng.integers(0, 20, 2)
    shot = shot[top : top + 260, left : left + 260]
    return np.ascontiguousarray(shot[:, ::-1] if flip else shot)


SAMPLE_PHOTO_FACES = {
    "sample1.jpg": 3,
    "sample2.jpg": 3,
    "sample3.jpg": 3,
    "sample4.jpg": 4,
    "sample5.jpg": 5,
    "sample6.jpg": 4,
}
"""Faces a person boxes in each of face-api's demo photos (counted by eye once): every face is
frontal or half-turned, none smaller than 140 px."""


@pytest.fixture(scope="session")
def sample_photos(package_files: Path) -> dict[str, np.ndarray]:
    """face-api's six demo photos (group shots, 1920 px wide) as RGB arrays, by file name."""
    return {
        name: np.asarray(Image.open(package_files / "demo" / name).convert("RGB"))
        for name in SAMPLE_PHOTO_FACES
    }
