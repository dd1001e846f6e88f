"""A hostile input corpus, generated at test time (nothing is downloaded or committed).

Two kinds of hostile input reach facerank from outside: file *contents* (what people upload)
and *names* (object keys and identity folders people type, or forge in a notification). Each
item says what facerank must make of it, so every surface (the enroll function, the event
source, the predictor, the CLI) is checked against the same expectation:

* a content item that decodes (a 1x1 pixel, CMYK, 16 bit, an animated GIF, a polyglot whose
  first bytes are a real JPEG) holds no face: enroll rejects it ``no_face``, the predictor
  answers 200 with no faces;
* a content item that does not decode is refused with its typed code (``truncated_image``,
  ``decompression_bomb``, ``not_an_image``, ...): a rejection event from enroll, a 400 naming
  the code from the predictor, a per-file error from the CLI;
* a name is refused as ``invalid_key`` or ``invalid_identity`` wherever it appears.

The gallery must come out of all of it byte for byte as it went in: :func:`store_digest`.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from facerank.storage import ObjectStore

NO_FACE = frozenset({"no_face", "face_too_small"})
"""What enroll answers for a photo that decodes but shows nobody."""


@dataclass(frozen=True)
class HostileFile:
    """File contents and how every surface must refuse them."""

    name: str
    data: bytes
    codes: frozenset[str]
    """The acceptable rejection codes (``NO_FACE`` for files that decode)."""

    @property
    def decodes(self) -> bool:
        return self.codes == NO_FACE


@dataclass(frozen=True)
class HostileName:
    """An object key (``<identity>/<file>``) and the codes it must be refused with."""

    label: str
    key: str
    codes: frozenset[str]

    @property
    def identity(self) -> str:
        """The identity part, as ``facerank upload --identity`` would be given it."""
        return self.key.partition("/")[0]


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` over a few bytes of real data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF0) rewritten to declare ``width x height``."""
    at = jpeg.index(b"\xff\xc0") + 5  # marker, length (2), precision (1): then height, width
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4 :]


def _jpeg_comment(text: bytes) -> bytes:
    """A JPEG COM segment carrying ``text``: a file both a JPEG decoder and a browser read."""
    return b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text


def _flip(data: bytes, at: int) -> bytes:
    buffer = bytearray(data)
    buffer[at] ^= 0x10
    return bytes(buffer)


def _zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def hostile_files() -> list[HostileFile]:
    """Every content item, built from a blank grey scene (so nothing in it is a face)."""
    scene = np.full((96, 128, 3), 120, np.uint8)
    scene[30:60, 40:90] = (200, 60, 30)  # some structure, so the encoders have work to do
    rgb = Image.fromarray(scene)
    jpeg = _encode(rgb, "JPEG", quality=90)
    png = _encode(rgb, "PNG")
    idat = png.index(b"IDAT") + 8  # inside the compressed pixels, behind the chunk's CRC
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: a 60 KB APP1 segment, the JPEG maximum
    exif[0x0112] = 9  # an orientation that does not exist
    gray16 = Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257).astype(np.uint16))
    frames = [rgb, rgb.rotate(180)]
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><circle r="9"/></svg>'
    html = b"<!doctype html><html><script>alert(document.cookie)</script></html>"
    refused = {
        "zero-bytes": (b"", "empty_image"),
        "truncated-jpeg": (jpeg[: len(jpeg) // 2], "truncated_image"),
        "truncated-png": (png[: len(png) // 2], "truncated_image"),
        "bit-flipped-png": (_flip(png, idat + 4), "corrupt_image"),
        "bit-flipped-jpeg-magic": (_flip(jpeg, 1), "not_an_image"),
        "png-30000x30000": (_png_claiming(30_000, 30_000), "decompression_bomb"),
        "jpeg-30000x30000": (_jpeg_claiming(jpeg, 30_000, 30_000), "decompression_bomb"),
        "png-0x0": (_png_claiming(0, 0), "corrupt_image"),
        "svg-as-jpg": (svg, "not_an_image"),
        "html-as-jpg": (html, "not_an_image"),
        "zip-as-jpg": (_zip_of({"face.jpg": jpeg}), "not_an_image"),
        "pdf-as-jpg": (b"%PDF-1.7\n1 0 obj <<>> endobj\n%%EOF\n", "not_an_image"),
        "psd-as-jpg": (b"8BPS\x00\x01" + bytes(64), "unsupported_format"),
    }
    decoding = {
        "1x1-png": _encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
        "huge-exif-jpeg": _encode(rgb, "JPEG", exif=exif),
        "cmyk-jpeg": _encode(rgb.convert("CMYK"), "JPEG"),
        "16-bit-png": _encode(gray16, "PNG"),
        "animated-gif": _encode(rgb, "GIF", save_all=True, append_images=frames[1:]),
        "polyglot-jpeg-zip": jpeg + _zip_of({"payload.html": html}),
        "polyglot-jpeg-html-comment": jpeg[:2] + _jpeg_comment(html) + jpeg[2:],
    }
    return [
        *(HostileFile(name, data, frozenset({code})) for name, (data, code) in refused.items()),
        *(HostileFile(name, data, NO_FACE) for name, data in decoding.items()),
    ]


INVALID_KEY = frozenset({"invalid_key"})
INVALID_IDENTITY = frozenset({"invalid_identity"})


def hostile_names() -> list[HostileName]:
    """Keys and identity names that must never become an object, a folder or an identity."""
    names = {
        "dotdot": ("../etc/passwd.jpg", INVALID_KEY),
        "dotdot-inside": ("alice/../../x.jpg", INVALID_KEY),
        "absolute": ("/etc/1.jpg", INVALID_KEY),
        "nul": ("ali\x00ce/1.jpg", INVALID_KEY),
        "newline": ("alice\nbob/1.jpg", INVALID_KEY),
        "escape-sequence": ("alice/\x1b[31mred.jpg", INVALID_KEY),
        "backslash": ("alice\\..\\x/1.jpg", INVALID_KEY),
        "rtl-override": ("alice\u202egpj.exe/1.jpg", INVALID_KEY),
        "zero-width-space": ("al\u200bice/1.jpg", INVALID_KEY),
        "1kb-key": ("alice/" + "x" * 1024 + ".jpg", INVALID_KEY),
        "1kb-identity": ("a" * 1000 + "/1.jpg", INVALID_KEY),
        "long-identity": ("a" * 200 + "/1.jpg", INVALID_IDENTITY),
        "no-identity-folder": ("alone.jpg", INVALID_IDENTITY),
        "dot-identity": (".alice/1.jpg", INVALID_IDENTITY),
        "lookalike-cyrillic": ("\u0430lice/1.jpg", INVALID_IDENTITY),
        "lookalike-greek": ("\u03bfscar/1.jpg", INVALID_IDENTITY),
        "lookalike-fullwidth-slash": ("alice\uff0f1.jpg", INVALID_IDENTITY),
        "lookalike-one-dot-leader": ("\u2024\u2024/1.jpg", INVALID_IDENTITY),
        "lookalike-division-slash": ("alice\u2215bob/1.jpg", INVALID_IDENTITY),
        "markup": ("<script>alert(1)</script>/1.jpg", INVALID_IDENTITY),
    }
    return [HostileName(label, key, codes) for label, (key, codes) in names.items()]


def creatable(name: HostileName) -> bool:
    """Whether the key can exist as a file under a bucket folder (Linux file names)."""
    parts = name.key.split("/")
    return (
        "\x00" not in name.key
        and not name.key.startswith("/")
        and ".." not in parts
        and all(0 < len(part.encode()) <= 255 for part in parts)
    )


def store_digest(store: ObjectStore, buckets: Iterable[str]) -> dict[tuple[str, str], str]:
    """SHA-256 of every object of ``buckets``: equal digests mean byte-for-byte equal stores."""
    return {
        (bucket, info.key): hashlib.sha256(store.get(bucket, info.key).data).hexdigest()
        for bucket in buckets
        for info in store.list(bucket)
    }
