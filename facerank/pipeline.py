"""The face pipeline: photo -> faces (box, score, aligned chip) -> embeddings.

One object, built from :class:`~facerank.settings.Settings`, used the same way by the CLI, the
enroll function, the predictor and evaluation, so every path decodes, detects and aligns
identically; only where the photo comes from differs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from facerank.embedding import Embedder
from facerank.errors import FaceTooSmallError, InvalidImageError, NoFaceError
from facerank.faces import AlignedFace, AlignMode, Detection, FaceDetector, HaarFaceDetector
from facerank.faces.align import ChipSpec, align_face
from facerank.faces.detect import HAAR_MIN_CONFIDENCE
from facerank.faces.find import find_faces
from facerank.faces.hog import HogFaceDetector
from facerank.faces.landmarks import LandmarkLocator
from facerank.faces.primary import choose_faces
from facerank.faces.ssd import SSD_MIN_CONFIDENCE, SSD_UNSURE_CONFIDENCE, SsdFaceDetector
from facerank.imaging import DecodedImage, decode_image, read_image_file
from facerank.registry.locate import default_model, load_model
from facerank.settings import EnrollFaces, Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Face:
    detection: Detection
    aligned: AlignedFace
    landmarks: np.ndarray | None = None
    """``(68, 2)`` landmarks in image pixels when aligning on ``landmarks``, else None."""


@dataclass(frozen=True)
class ImageFaces:
    """Everything the pipeline learned from one photo (the chips, not the full pixels)."""

    width: int
    height: int
    faces: list[Face]

    def chosen(self, policy: EnrollFaces) -> list[Face]:
        """The faces ``policy`` (``FACERANK_ENROLL_FACES``) keeps of this photo."""
        return choose_faces(self.faces, policy, self.width, self.height)

    def subject(self, policy: EnrollFaces = "primary") -> Face | None:
        """The one face that stands for the photo where only one can (``facerank embed``,
        training data): the one ``policy`` enrolls, the primary one when it enrolls all."""
        chosen = self.chosen("largest" if policy == "largest" else "primary")
        return chosen[0] if chosen else None


@dataclass(frozen=True)
class FileResult:
    """One file's outcome: its faces, or the typed reason it could not be used."""

    path: Path
    result: ImageFaces | InvalidImageError


class FacePipeline:
    """Detector + aligner + embedder, with the chip layout dictated by the embedder."""

    def __init__(
        self,
        detector: FaceDetector,
        embedder: Embedder,
        *,
        align_mode: AlignMode = "eyes",
        limits: Mapping[str, int] | None = None,
        locator: LandmarkLocator | None = None,
    ) -> None:
        """``limits``: the decoder's ``max_bytes`` / ``max_pixels`` (its defaults if omitted).
        ``locator``: required by ``align_mode="landmarks"``, unused otherwise."""
        if align_mode == "landmarks" and locator is None:
            raise ValueError("align_mode 'landmarks' needs a LandmarkLocator")
        self.detector = detector
        self.embedder = embedder
        self.align_mode = align_mode
        self.locator = locator if align_mode == "landmarks" else None
        self._limits = dict(limits or {})

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Embedder | None = None) -> FacePipeline:
        """The pipeline ``settings`` describe, embedding with ``embedder`` if given, else with
        the model ``FACERANK_MODEL`` names (``auto``: the pretrained one when set up).
        ``align=landmarks`` without the landmark model set up aligns on the eyes instead."""
        if embedder is None:
            embedder = load_model(default_model(settings), settings)
        align_mode, locator = alignment_from_settings(settings)
        return cls(
            detector_from_settings(settings),
            embedder,
            align_mode=align_mode,
            limits=image_limits(settings),
            locator=locator,
        )

    @property
    def model_version(self) -> str:
        return self.embedder.model_version

    def analyze(self, pixels: np.ndarray) -> ImageFaces:
        """Detect every face (largest first) and align each into the embedder's chip.

        With landmark alignment, all faces of the photo are located in one batch.
        """
        faces = [
            Face(f.detection, self._chip(pixels, f.detection, f.landmarks), f.landmarks)
            for f in find_faces(pixels, self.detector, self.locator)
        ]
        return ImageFaces(width=pixels.shape[1], height=pixels.shape[0], faces=faces)

    def _chip(
        self, pixels: np.ndarray, detection: Detection, landmarks: np.ndarray | None
    ) -> AlignedFace:
        return align_face(pixels, detection, self.embedder.chip, self.align_mode, landmarks)

    def align(self, pixels: np.ndarray, face: Face, spec: ChipSpec) -> AlignedFace:
        """``face`` of ``pixels`` in another layout (the gallery's crop), from the same fit."""
        return align_face(pixels, face.detection, spec, self.align_mode, face.landmarks)

    def decode(self, data: bytes) -> DecodedImage:
        """Decode untrusted image bytes within this pipeline's limits (typed errors)."""
        return decode_image(data, **self._limits)

    def analyze_file(self, path: Path) -> FileResult:
        """Read, decode and analyze one file; bad images become a result, not an exception."""
        try:
            decoded = read_image_file(path, **self._limits)
        except InvalidImageError as exc:
            return FileResult(path, exc)
        return FileResult(path, self.analyze(decoded.pixels))

    def analyze_files(
        self, paths: Iterable[Path], *, workers: int | None = None
    ) -> Iterator[FileResult]:
        """:meth:`analyze_file` over many files in parallel threads, results in input order.

        OpenCV and Pillow release the GIL while they work, so threads use every core; the
        look-ahead is bounded so thousands of paths never hold thousands of photos in memory.
        """
        return ordered_map(self.analyze_file, paths, workers=workers or os.cpu_count() or 1)

    def embed(self, faces: Sequence[Face]) -> np.ndarray:
        """Embeddings of ``faces`` in one batch: ``(len(faces), dim)`` float32 unit rows."""
        if not faces:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return self.embedder.embed(np.stack([f.aligned.chip for f in faces]))


def detector_from_settings(
    settings: Settings, *, min_face_size: int | None = None, max_faces: int | None = None
) -> FaceDetector:
    """The detector ``settings.detector`` names, configured by the detection settings (or the
    overrides given). ``ssd`` asks dlib's HOG detector for a second opinion on a photo where
    it finds no face, unless the threshold was set (it is then taken literally). ``ssd`` whose
    model is not set up detects with Haar instead, saying so once per process, as nothing is
    downloaded or converted while serving."""
    size = settings.min_face_size if min_face_size is None else min_face_size
    count = settings.max_faces if max_faces is None else max_faces
    threshold = settings.min_face_confidence
    if settings.detector == "ssd":
        from facerank.descriptor.ssd import ssd_model_dir

        model_dir = ssd_model_dir(settings)
        if model_dir.is_dir():
            return SsdFaceDetector(
                model_dir,
                min_face_size=size,
                max_faces=count,
                min_confidence=SSD_MIN_CONFIDENCE if threshold is None else threshold,
                unsure_floor=SSD_UNSURE_CONFIDENCE if threshold is None else None,
                fallback=HogFaceDetector(min_face_size=size, max_faces=count)
                if threshold is None
                else None,
            )
        _warn_once(
            f"the SSD face detector is not set up in {model_dir} (run `facerank models fetch`); "
            "detecting faces with the Haar cascade instead"
        )
    return HaarFaceDetector(
        min_face_size=size,
        max_faces=count,
        min_confidence=HAAR_MIN_CONFIDENCE if threshold is None else threshold,
    )


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time this process meets it: every component
    builds detectors more than once (each pipeline, the enroll function's probe)."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning(message)


def alignment_from_settings(settings: Settings) -> tuple[AlignMode, LandmarkLocator | None]:
    """The alignment mode ``settings`` ask for and its landmark locator, or ``eyes`` (and no
    locator) when they ask for landmarks but the landmark model is not set up."""
    locator = locator_from_settings(settings)
    if settings.align == "landmarks" and locator is None:
        return "eyes", None
    return settings.align, locator


def locator_from_settings(settings: Settings) -> LandmarkLocator | None:
    """The landmark locator ``settings.align`` asks for; None (with a warning) when its model
    is not set up, as nothing is downloaded or converted while serving."""
    if settings.align != "landmarks":
        return None
    from facerank.descriptor.landmarks import landmark_model_dir

    model_dir = landmark_model_dir(settings)
    if not model_dir.is_dir():
        log.warning(
            "the landmark model is not set up (run `facerank models fetch`); "
            "aligning faces on their eyes instead"
        )
        return None
    return LandmarkLocator(model_dir)


SMALLEST_DETECTABLE = 24
"""Below this no detector sees faces at all (Haar's window), so none can be "too small"."""


class NoFaceExplainer:
    """Tells "no face at all" from "faces, but all below the minimum size", for refusals.

    Enrollment and identification refuse a photo without a usable face with the same codes
    (``no_face``, ``face_too_small``), so the person who dropped it learns what to fix.
    """

    def __init__(self, settings: Settings) -> None:
        self._min_face_size = settings.min_face_size
        self._probe = detector_from_settings(
            settings, min_face_size=SMALLEST_DETECTABLE, max_faces=1
        )

    def explain(self, pixels: np.ndarray) -> NoFaceError:
        height, width = pixels.shape[:2]
        small = self._probe.detect(pixels)
        if small:
            side = small[0].box[2]
            return FaceTooSmallError(
                f"the largest face is {side}px wide, below the minimum of {self._min_face_size}px"
            )
        return NoFaceError(f"no face found in the {width}x{height} image")


def image_limits(settings: Settings) -> dict[str, int]:
    """The decoder's byte and pixel limits, as keyword arguments for ``read_image_file``."""
    return {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, lookahead: int | None = None
) -> Iterator[R]:
    """Like ``Executor.map`` but lazy: at most ``lookahead`` calls run or wait ahead."""
    window = lookahead or 2 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facerank") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
