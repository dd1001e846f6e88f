"""Turn untrusted image bytes into one upright 8-bit RGB array, or a typed refusal.

Every photo enters facerank from outside (uploads, buckets), so this is where hostile or broken
data first meets our code. The rules that follow from that:

* Limits come first and are cheap: the byte count before parsing, the header-declared pixel
  count before any pixel is decoded (``Image.open`` is lazy; ``load`` is not).
* Only the plugins in :data:`ALLOWED_FORMATS` are ever offered the data (``formats=``), so a
  file that claims to be EPS can never reach Ghostscript, and the long tail of rarely audited
  Pillow plugins is out of reach. Other formats are recognised by magic bytes only, to explain
  the refusal.
* Whatever goes wrong inside Pillow surfaces as an :class:`InvalidImageError` subclass: Pillow
  signals bad data with almost any exception type, and callers must be able to branch on
  ``code`` instead of guessing.
* Pillow's global switches (``MAX_IMAGE_PIXELS``, ``LOAD_TRUNCATED_IMAGES``) and the warnings
  filters are left alone: they are process-wide, and this runs in threaded servers.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from facerank.errors import (
    CorruptImageError,
    DecompressionBombError,
    EmptyImageError,
    ImageTooLargeError,
    InvalidImageError,
    NotAnImageError,
    TruncatedImageError,
    UnreadableFileError,
    UnsupportedImageFormatError,
)

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000

# The Pillow plugins we let parse untrusted bytes, most common first (the order ``Image.open``
# tries them). MPO has no opener of its own: the JPEG plugin returns MPO for multi-picture
# JPEGs (which is how many phone photos open), so it is allowed but never passed to ``open``.
_PLUGIN_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
ALLOWED_FORMATS: frozenset[str] = frozenset((*_PLUGIN_FORMATS, "MPO"))

# Magic bytes as (offset, prefix, name). Only consulted after Pillow has failed, to say *why*:
# a damaged file of an allowed format, an image format we refuse, or no image at all.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (8, b"WEBP", "WEBP"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"II+\x00", "TIFF"),
    (0, b"MM\x00+", "TIFF"),
    *((0, b"P%d" % kind, "PPM") for kind in range(1, 7)),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "PSD"),
    (0, b"%!PS", "EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"),
    *((4, b"ftyp" + brand, "HEIC") for brand in (b"heic", b"heix", b"hevc", b"heim", b"heis")),
    *((4, b"ftyp" + brand, "HEIF") for brand in (b"mif1", b"msf1")),
    *((4, b"ftyp" + brand, "AVIF") for brand in (b"avif", b"avis")),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (0, b"qoif", "QOI"),
    (0, b"DDS ", "DDS"),
    (0, b"icns", "ICNS"),
    (0, b"%PDF-", "PDF"),
    (0, b"PK\x03\x04", "ZIP"),
)
_NOT_IMAGES = frozenset({"PDF", "ZIP"})

# Pillow messages (and one exception type) that mean "the data stopped before the decoder was
# done". Matching text is brittle, so container-level checks (_ENDS_EARLY) back it up.
_TRUNCATION_MARKERS = ("truncated", "reached eof", "not enough image data")

# Pixel modes Pillow's decoders produce for the allowed formats, by how we reach RGB.
_RGB_CONVERTIBLE_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"})
_ALPHA_MODES = frozenset({"LA", "PA", "RGBA", "RGBa"})
# 16-bit grayscale ("I" holds it for PGM and signed TIFF): Pillow's convert() clips these at
# 255 instead of scaling, turning most of the range white, so we scale them ourselves.
_WIDE_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

_WHITE = (255, 255, 255)
# Bytes per value of each TIFF field type.
_TIFF_TYPE_SIZES = {
    **dict.fromkeys((1, 2, 6, 7), 1),  # BYTE, ASCII, SBYTE, UNDEFINED
    **dict.fromkeys((3, 8), 2),  # SHORT, SSHORT
    **dict.fromkeys((4, 9, 11, 13), 4),  # LONG, SLONG, FLOAT, IFD
    **dict.fromkeys((5, 10, 12, 16, 17, 18), 8),  # RATIONAL, SRATIONAL, DOUBLE, LONG8, SLONG8, IFD8
}
_ORIENTATION_METHODS: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodedImage:
    """The first frame of a photo, upright, as 8-bit RGB, plus what the source said about it."""

    pixels: np.ndarray
    """(H, W, 3) uint8 RGB, C-contiguous and read-only, so it can be shared without copies."""

    format: str
    """Pillow format name of the source (one of :data:`ALLOWED_FORMATS`)."""

    frames: int
    """Frames the file declares; only the first is ever decoded."""

    orientation_applied: int
    """The EXIF orientation (1-8) that was applied to make ``pixels`` upright; 1 means none."""


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode the first frame of ``data`` to upright RGB, refusing anything unsafe or broken.

    Raises an :class:`InvalidImageError` subclass, and only that, for bad input. Besides
    ``max_pixels``, Pillow's own guard (``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179 million
    by default) still applies; it is reported as :class:`DecompressionBombError` too.
    """
    if not data:
        raise EmptyImageError("image data is empty (0 bytes)")
    _refuse_oversize(len(data), max_bytes)
    try:
        return _decode(data, max_pixels)
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning only arrives as an exception when the caller's filters say "error".
        raise DecompressionBombError(f"Pillow's decompression-bomb guard: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(data) from exc
    except Exception as exc:  # Pillow reports bad data as OSError, ValueError, struct.error, ...
        raise _damaged(_sniff(data) or "image", data, exc) from exc


def read_image_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Read and decode an image file, refusing oversized files before reading any of them.

    The size comes from ``fstat`` of the opened file, and at most ``max_bytes + 1`` bytes are
    read, so a file that grows after the check, or one whose size ``fstat`` cannot tell (a
    device, a ``/proc`` file), is still bounded.
    A file that cannot be read at all (missing, a folder, no permission) raises
    :class:`UnreadableFileError`, so batch callers report it per file like any bad image.
    """
    try:
        with open(path, "rb") as file:
            _refuse_oversize(os.fstat(file.fileno()).st_size, max_bytes)
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise UnreadableFileError(
            f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}"
        ) from None
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)


def _refuse_oversize(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ImageTooLargeError(f"image is {size} bytes, more than the limit of {max_bytes}")


def _decode(data: bytes, max_pixels: int) -> DecodedImage:
    """The happy path; every Pillow failure is left to the caller to classify."""
    with Image.open(io.BytesIO(data), formats=_PLUGIN_FORMATS) as image:
        _check_dimensions(image, max_pixels)
        frames = getattr(image, "n_frames", 1)
        # Read before load: Pillow's TIFF plugin turns the image upright while loading and
        # drops the tag, so the tag is still pending afterwards only where nobody applied it.
        orientation = _exif_orientation(image)
        image.load()
        rgb = _to_rgb(image)
        pending = _exif_orientation(image)
        if pending != 1:
            rgb = rgb.transpose(_ORIENTATION_METHODS[pending])
        pixels = np.asarray(rgb)  # one packed copy, already C-contiguous
        pixels.flags.writeable = False
        return DecodedImage(pixels, str(image.format), frames, orientation)


def _check_dimensions(image: Image.Image, max_pixels: int) -> None:
    """Refuse from the header alone, before ``load`` allocates and decodes anything."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"{image.format} header declares an empty {width}x{height} image")
    if width * height > max_pixels:
        raise DecompressionBombError(
            f"{image.format} header declares {width}x{height} = {width * height} pixels, "
            f"more than the limit of {max_pixels}"
        )


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag if it is one of the 8 defined values, else 1 (leave as is)."""
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and value in _ORIENTATION_METHODS else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Reduce any decoded mode to RGB; transparency is composited onto white."""
    mode = image.mode
    if mode in _WIDE_GRAY_MODES:
        return _wide_gray_to_rgb(image)
    if mode in _ALPHA_MODES or (mode in _RGB_CONVERTIBLE_MODES and image.has_transparency_data):
        return _flatten_onto_white(image)
    if mode == "RGB":
        return image  # convert() would copy
    if mode in _RGB_CONVERTIBLE_MODES:
        return image.convert("RGB")
    raise UnsupportedImageFormatError(
        f"{image.format} image with {mode!r} pixels is not supported "
        "(floating-point and colour-science modes have no single 8-bit RGB reading)"
    )


def _flatten_onto_white(image: Image.Image) -> Image.Image:
    """Composite over white so fully transparent pixels have one deterministic colour.

    Whatever RGB a transparent pixel happens to store is arbitrary (often black or noise);
    letting it through would make identical-looking photos embed differently.
    """
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, _WHITE)
    canvas.paste(rgba, mask=rgba)
    return canvas


def _wide_gray_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit gray to 8 bits with rounding: ``round(v * 255 / 65535)``.

    Mode ``I`` is a 32-bit container; Pillow fills it with 0..65535 for 16-bit PGM and
    TIFF data, so values outside that range (signed TIFF) are clipped first. A
    single-value ``transparency`` (tRNS for 16-bit gray PNG) becomes white, as alpha does.
    """
    values = np.asarray(image)
    if values.dtype.kind == "i":
        values = np.clip(values, 0, 65535)
    gray = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):
        gray[values == transparent] = 255
    return Image.fromarray(gray).convert("RGB")


def _sniff(data: bytes) -> str | None:
    """Name the format from its magic bytes, or None."""
    for offset, magic, name in _SIGNATURES:
        if data.startswith(magic, offset):
            return name
    return None


def _unidentified(data: bytes) -> InvalidImageError:
    """Explain why none of the allowed plugins accepted the data."""
    name = _sniff(data)
    if name is None:
        return NotAnImageError(f"data is not a recognised image (starts with {data[:16]!r})")
    if name in _NOT_IMAGES:
        return NotAnImageError(f"data is a {name} file, not an image")
    if name not in ALLOWED_FORMATS:
        allowed = ", ".join(sorted(ALLOWED_FORMATS))
        return UnsupportedImageFormatError(f"{name} images are not supported; use one of {allowed}")
    return _damaged(name, data, None)


def _damaged(name: str, data: bytes, exc: BaseException | None) -> InvalidImageError:
    """Truncated or corrupt: decide from Pillow's complaint and from the container itself.

    ``exc`` is what Pillow raised, or None when no allowed plugin could parse the header.
    """
    reason = "its header could not be parsed" if exc is None else f"{type(exc).__name__}: {exc}"
    ends_early = _ENDS_EARLY.get(name)
    pillow_says_truncated = exc is not None and _reports_truncation(exc)
    if pillow_says_truncated or (ends_early is not None and ends_early(data)):
        return TruncatedImageError(f"{name} data ends early (after {len(data)} bytes): {reason}")
    return CorruptImageError(f"{name} data could not be decoded: {reason}")


def _reports_truncation(exc: BaseException) -> bool:
    message = str(exc).lower()
    return isinstance(exc, EOFError) or any(marker in message for marker in _TRUNCATION_MARKERS)


# --- container-level truncation checks ----------------------------------------------------
# Pillow only sometimes says "truncated": a PNG cut inside its header, a WebP cut anywhere or a
# TIFF whose directory (often written last) is cut off all come back as generic errors. The
# containers themselves say how long they should be or how they end, which decides it.


def _jpeg_ends_early(data: bytes) -> bool:
    return not data.endswith(b"\xff\xd9")  # EOI marker


def _png_ends_early(data: bytes) -> bool:
    return not data.endswith(b"IEND\xaeB`\x82")  # IEND chunk with its fixed CRC


def _gif_ends_early(data: bytes) -> bool:
    return not data.endswith(b"\x00;")  # last block terminator, then the trailer byte


def _riff_ends_early(data: bytes) -> bool:
    return len(data) < 8 + int.from_bytes(data[4:8], "little")  # RIFF declares its size


def _bmp_ends_early(data: bytes) -> bool:
    # 14-byte file header, whose bfSize says how long the file is (0 when the writer didn't know)
    return len(data) < max(14, int.from_bytes(data[2:6], "little"))


def _tiff_ends_early(data: bytes) -> bool:
    """True when the first directory, or a value it points at, lies past the end of the data.

    Writers often put the directory after the pixel data, so a cut file loses it entirely.
    """
    order: Literal["little", "big"] = "little" if data.startswith(b"II") else "big"
    word, count_size, entry_size = (8, 8, 20) if data[2:4] in (b"+\x00", b"\x00+") else (4, 2, 12)
    directory = _read_uint(data, word, word, order)  # BigTIFF's pointer sits at 8, classic's at 4
    count = None if directory is None else _read_uint(data, directory, count_size, order)
    if directory is None or count is None:
        return True
    entries_at = directory + count_size
    if len(data) < entries_at + count * entry_size + word:  # entries, then next-directory pointer
        return True
    for entry in range(entries_at, entries_at + count * entry_size, entry_size):
        field_type = int.from_bytes(data[entry + 2 : entry + 4], order)
        size = _TIFF_TYPE_SIZES.get(field_type, 1) * int.from_bytes(
            data[entry + 4 : entry + 4 + word], order
        )
        value_at = int.from_bytes(data[entry + 4 + word : entry + 4 + 2 * word], order)
        if size > word and len(data) < value_at + size:  # values wider than a word live elsewhere
            return True
    return False


def _read_uint(data: bytes, at: int, size: int, order: Literal["little", "big"]) -> int | None:
    """The unsigned integer at ``at``, or None when the data ends first."""
    return int.from_bytes(data[at : at + size], order) if len(data) >= at + size else None


_ENDS_EARLY = {
    "JPEG": _jpeg_ends_early,
    "PNG": _png_ends_early,
    "GIF": _gif_ends_early,
    "WEBP": _riff_ends_early,
    "BMP": _bmp_ends_early,
    "TIFF": _tiff_ends_early,
}
