"""Face detection and alignment: from an RGB photo to embedder-ready face chips."""

from facerank.faces.align import (
    ARCFACE_CHIP_112,
    DLIB_CHIP_150,
    VGGFACE2_CHIP_224,
    AlignedFace,
    AlignMode,
    ChipSpec,
    align_face,
)
from facerank.faces.detect import Detection, FaceDetector, HaarFaceDetector
from facerank.faces.landmarks import LandmarkLocator
from facerank.faces.ssd import SsdFaceDetector

__all__ = [
    "ARCFACE_CHIP_112",
    "DLIB_CHIP_150",
    "VGGFACE2_CHIP_224",
    "AlignMode",
    "AlignedFace",
    "ChipSpec",
    "Detection",
    "FaceDetector",
    "HaarFaceDetector",
    "LandmarkLocator",
    "SsdFaceDetector",
    "align_face",
]
