"""Enrolling test photos through the real enroll handler, in-process."""

from __future__ import annotations

import cv2
import numpy as np

from facerank.events import ObjectChangeData, object_event
from facerank.settings import Settings
from facerank.storage import FolderStore
from functions.enroll.handler import build_handler
from tests.plugins.faces import encode


def lfw_photo(lfw_faces: np.ndarray, index: int) -> np.ndarray:
    """A 25 px LFW face upscaled to a detectable size, on a grey 320 px canvas."""
    big = cv2.resize(lfw_faces[index], (200, 200), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((320, 320), 128, np.uint8)
    canvas[60:260, 60:260] = big
    return np.repeat(canvas[..., None], 3, axis=2)


class Enroller:
    """Drives the real enroll handler: upload a photo, deliver its object event."""

    def __init__(self, settings: Settings) -> None:
        self.store = FolderStore(settings.buckets_dir)
        self.store.ensure_bucket(settings.faces_bucket)
        self.handler = build_handler(settings, self.store)
        self.handler.gallery.ensure()

    def add(self, key: str, photo: np.ndarray) -> None:
        etag = self.store.put("faces", key, encode(photo, "JPEG", quality=92)).etag
        data = ObjectChangeData("faces", key, etag=etag)
        outcome = self.handler.handle(object_event("created", "file:///test/faces", data))
        assert outcome.verdict == "enrolled", outcome.reason

    def remove(self, key: str) -> None:
        self.store.delete("faces", key)
        data = ObjectChangeData("faces", key)
        self.handler.handle(object_event("deleted", "file:///test/faces", data))
