"""Image handling: turning untrusted bytes into pixel arrays the rest of facerank can trust."""

from facerank.imaging.decode import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    decode_image,
    read_image_file,
)

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "decode_image",
    "read_image_file",
]
