"""decode_image / read_image_file: every supported input, and every kind of refusal.

All inputs are generated here (Pillow, numpy, hand-written headers), so the suite needs no data
files; ``skimage.data.astronaut()`` stands in for a real photo.
"""

from __future__ import annotations

import contextlib
import io
import struct
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, ImageFile
from skimage.data import astronaut

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
from facerank.imaging import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    decode_image,
    read_image_file,
)

RED, LIME, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# --- helpers ------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, *, bit_depth: int = 8, color_type: int = 2, rows: bytes) -> bytes:
    """A PNG written by hand, so the header can say things Pillow would never write.

    ``rows`` are the raw scanlines, each starting with its filter byte.
    """
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _mean_abs_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual.astype(np.int16) - expected.astype(np.int16)).mean())


def _assert_valid(result: DecodedImage) -> None:
    """The contract every successful decode meets, whatever the input."""
    pixels = result.pixels
    assert pixels.dtype == np.uint8
    assert pixels.ndim == 3
    assert pixels.shape[2] == 3
    assert pixels.flags.c_contiguous
    assert not pixels.flags.writeable
    assert result.format in ALLOWED_FORMATS
    assert result.frames >= 1
    assert 1 <= result.orientation_applied <= 8


@dataclass
class _Peak:
    bytes: int = 0


@contextlib.contextmanager
def _peak_memory() -> Iterator[_Peak]:
    """Measure the peak Python-heap allocation of a block (read it after the block)."""
    peak = _Peak()
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


@pytest.fixture(scope="module")
def photo_p() -> Image.Image:
    """The astronaut, 96x64 and reduced to one 256-colour palette so GIF can hold it exactly."""
    return Image.fromarray(astronaut()[:256, 64:448]).reduce(4).quantize(256)


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any image's pixel data starts to be decoded."""

    def refuse(self: ImageFile.ImageFile) -> None:
        pytest.fail(f"{self.format} pixels were decoded before the size check refused them")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.fixture
def decoders_created(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the pixel decoders Pillow creates (one per decoded frame or tile)."""
    created: list[str] = []
    real = Image._getdecoder

    def spy(mode: str, decoder_name: str, *args: Any) -> Any:
        created.append(decoder_name)
        return real(mode, decoder_name, *args)

    monkeypatch.setattr(Image, "_getdecoder", spy)
    return created


# --- formats and pixel modes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "params", "max_error"),
    [
        pytest.param("PNG", "RGB", {}, 0, id="png"),
        pytest.param("PNG", "P", {}, 0, id="png-palette"),
        pytest.param("PNG", "L", {}, 0, id="png-gray"),
        pytest.param("PNG", "1", {}, 0, id="png-bilevel"),
        pytest.param("GIF", "P", {}, 0, id="gif"),
        pytest.param("BMP", "RGB", {}, 0, id="bmp"),
        pytest.param("BMP", "P", {}, 0, id="bmp-palette"),
        pytest.param("TIFF", "RGB", {}, 0, id="tiff"),
        pytest.param("TIFF", "RGB", {"compression": "tiff_lzw"}, 0, id="tiff-lzw"),
        pytest.param("TIFF", "CMYK", {}, 0, id="tiff-cmyk"),
        pytest.param("PPM", "RGB", {}, 0, id="ppm"),
        pytest.param("PPM", "L", {}, 0, id="pgm"),
        pytest.param("PPM", "1", {}, 0, id="pbm"),
        pytest.param("WEBP", "RGB", {"lossless": True}, 0, id="webp-lossless"),
        pytest.param("WEBP", "RGB", {"quality": 95}, 4, id="webp"),
        pytest.param("JPEG", "RGB", {"quality": 95}, 4, id="jpeg"),
        pytest.param("JPEG", "RGB", {"quality": 95, "progressive": True}, 4, id="jpeg-progressive"),
        pytest.param("JPEG", "L", {"quality": 95}, 4, id="jpeg-gray"),
        pytest.param("JPEG", "CMYK", {"quality": 95}, 4, id="jpeg-cmyk"),
    ],
)
def test_formats_decode_to_the_expected_rgb(
    photo_p: Image.Image, fmt: str, mode: str, params: dict[str, Any], max_error: float
) -> None:
    source = photo_p.convert(mode)
    result = decode_image(_encode(source, fmt, **params))
    _assert_valid(result)
    assert (result.format, result.frames, result.orientation_applied) == (fmt, 1, 1)
    assert result.pixels.shape == (64, 96, 3)
    expected = _rgb(source)
    if max_error:
        assert _mean_abs_error(result.pixels, expected) <= max_error
    else:
        np.testing.assert_array_equal(result.pixels, expected)


def _gray_rgb(*rows: list[int]) -> np.ndarray:
    return np.repeat(np.array(rows, dtype=np.uint8)[..., None], 3, axis=2)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            b"P5\n3 2\n255\n" + bytes([0, 128, 255, 1, 2, 3]),
            _gray_rgb([0, 128, 255], [1, 2, 3]),
            id="P5",
        ),
        pytest.param(
            b"P6 2 1 255 " + bytes([*RED, *BLUE]), np.array([[RED, BLUE]], np.uint8), id="P6"
        ),
        pytest.param(  # 1 is black in PBM
            b"P4\n# a comment\n8 1\n" + bytes([0b10100000]),
            _gray_rgb([0, 255, 0, 255, 255, 255, 255, 255]),
            id="P4",
        ),
    ],
)
def test_netpbm_written_by_hand(data: bytes, expected: np.ndarray) -> None:
    result = decode_image(data)
    _assert_valid(result)
    assert result.format == "PPM"
    np.testing.assert_array_equal(result.pixels, expected)


_WIDE_GRAY = np.array([[0, 257, 32896, 65280, 65535]], dtype=np.uint16)
_WIDE_GRAY_AS_8_BIT = [0, 1, 128, 254, 255]  # round(v * 255 / 65535); clipping gives 0, 255, ...


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(_encode(Image.fromarray(_WIDE_GRAY), "PNG"), _WIDE_GRAY_AS_8_BIT, id="png"),
        pytest.param(_encode(Image.fromarray(_WIDE_GRAY), "TIFF"), _WIDE_GRAY_AS_8_BIT, id="tiff"),
        pytest.param(
            b"P5 5 1 65535\n" + _WIDE_GRAY.astype(">u2").tobytes(), _WIDE_GRAY_AS_8_BIT, id="pgm"
        ),
        pytest.param(
            b"P5 3 1 1000\n" + np.array([0, 500, 1000], ">u2").tobytes(),
            [0, 128, 255],
            id="pgm-maxval-1000",
        ),
    ],
)
def test_16_bit_gray_is_scaled_not_clipped(data: bytes, expected: list[int]) -> None:
    """Pillow's convert('RGB') clips 16-bit gray at 255, which would whiten most of the range."""
    result = decode_image(data)
    _assert_valid(result)
    for channel in range(3):
        np.testing.assert_array_equal(result.pixels[0, :, channel], expected)


def test_16_bit_colour_png_is_scaled_not_clipped() -> None:
    """Pillow keeps the high byte of 16-bit colour: floor(v/256), never more than one level
    from the exact round(v*255/65535), and never clipped."""
    ramp = np.linspace(0, 65535, 300).astype(np.uint16)
    ramp[-3:] = [32896, 65280, 65535]
    samples = ramp.reshape(1, 100, 3)
    result = decode_image(_png(100, 1, bit_depth=16, rows=b"\0" + samples.astype(">u2").tobytes()))
    _assert_valid(result)
    exact = np.round(samples / 257.0)
    assert np.abs(result.pixels.astype(int) - exact).max() <= 1
    assert result.pixels[0, -1].tolist() == [128, 255, 255]  # exact rounding gives 254 for 65280


def _two_pixels(mode: str, hidden: Any, shown: Any) -> Image.Image:
    """A 2x1 image: a transparent pixel whose stored colour must not leak, then an opaque one."""
    image = Image.new(mode, (2, 1))
    image.putpixel((0, 0), hidden)
    image.putpixel((1, 0), shown)
    return image


def _palette_pair() -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE])
    image.putpixel((1, 0), 1)
    return image


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        pytest.param(_encode(_two_pixels("RGBA", (*RED, 0), (*BLUE, 255)), "PNG"), BLUE, id="rgba"),
        pytest.param(_encode(_two_pixels("LA", (0, 0), (80, 255)), "PNG"), (80,) * 3, id="la"),
        pytest.param(_encode(_palette_pair(), "PNG", transparency=0), BLUE, id="palette-png"),
        pytest.param(_encode(_palette_pair(), "GIF", transparency=0), BLUE, id="palette-gif"),
        pytest.param(
            _encode(_two_pixels("RGB", RED, BLUE), "PNG", transparency=RED), BLUE, id="rgb-trns"
        ),
        pytest.param(
            _encode(_two_pixels("L", 7, 80), "PNG", transparency=7), (80,) * 3, id="gray-trns"
        ),
        pytest.param(
            _encode(Image.fromarray(np.array([[7, 65535]], np.uint16)), "PNG", transparency=7),
            WHITE,
            id="gray16-trns",
        ),
        pytest.param(
            _encode(_two_pixels("RGBA", (*RED, 0), (*BLUE, 255)), "WEBP", lossless=True),
            BLUE,
            id="webp-rgba",
        ),
        pytest.param(
            _encode(_two_pixels("RGBA", (*RED, 0), (*BLUE, 255)), "TIFF"), BLUE, id="tiff-rgba"
        ),
    ],
)
def test_transparent_pixels_become_white(data: bytes, shown: tuple[int, int, int]) -> None:
    result = decode_image(data)
    _assert_valid(result)
    assert result.pixels[0].tolist() == [list(WHITE), list(shown)]


def test_partial_alpha_is_blended_onto_white() -> None:
    result = decode_image(_encode(Image.new("RGBA", (1, 1), (0, 0, 0, 128)), "PNG"))
    assert result.pixels[0, 0].tolist() == [127, 127, 127]


def test_float_pixels_are_refused_as_unsupported() -> None:
    with pytest.raises(UnsupportedImageFormatError, match=r"TIFF image with 'F' pixels"):
        decode_image(_encode(Image.new("F", (4, 4), 0.5), "TIFF"))


# --- orientation ---------------------------------------------------------------------------

# How to store an upright picture so that applying EXIF orientation N shows it upright again.
_STORE_FOR_ORIENTATION: dict[int, Image.Transpose | None] = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.fixture(scope="module")
def upright() -> Image.Image:
    """48x32 in 16-pixel blocks of six colours: every flip and rotation looks different."""
    colours = [[RED, LIME, BLUE], [WHITE, (0, 0, 0), (255, 255, 0)]]
    blocks = np.array(colours, dtype=np.uint8)
    return Image.fromarray(blocks.repeat(16, axis=0).repeat(16, axis=1))


def _with_orientation(image: Image.Image, fmt: str, orientation: int) -> bytes:
    method = _STORE_FOR_ORIENTATION[orientation]
    stored = image if method is None else image.transpose(method)
    if fmt == "TIFF":  # TIFF keeps orientation in its own directory, not in an EXIF block
        return _encode(stored, fmt, tiffinfo={0x0112: orientation})
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    return _encode(stored, fmt, exif=exif, **params)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_lands_upright(upright: Image.Image, fmt: str, orientation: int) -> None:
    result = decode_image(_with_orientation(upright, fmt, orientation))
    _assert_valid(result)
    assert result.orientation_applied == orientation
    assert result.pixels.shape == (32, 48, 3)
    assert _mean_abs_error(result.pixels, np.asarray(upright)) < 8  # a wrong turn scores ~100


# --- multi-frame files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        pytest.param("GIF", {}, id="gif"),
        pytest.param("PNG", {}, id="apng"),
        pytest.param("WEBP", {"lossless": True}, id="webp"),
        pytest.param("TIFF", {}, id="tiff"),
        pytest.param("MPO", {}, id="mpo"),
    ],
)
def test_only_the_first_frame_is_decoded(
    decoders_created: list[str], fmt: str, params: dict[str, Any]
) -> None:
    frames = [Image.new("RGB", (8, 6), colour) for colour in (RED, LIME, BLUE)]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:], **params)
    result = decode_image(data)
    _assert_valid(result)
    assert (result.format, result.frames) == (fmt, 3)
    assert _mean_abs_error(result.pixels, _rgb(frames[0])) < 2
    assert len(decoders_created) == 1


# --- refusals: size limits -----------------------------------------------------------------


def test_empty_data_is_refused() -> None:
    with pytest.raises(EmptyImageError, match="0 bytes"):
        decode_image(b"")


def test_too_many_bytes_is_refused_before_parsing() -> None:
    with pytest.raises(ImageTooLargeError, match=r"101 bytes, more than the limit of 100"):
        decode_image(b"\0" * 101, max_bytes=100)  # not an image either; size wins


def test_limits_are_inclusive() -> None:
    data = _encode(Image.new("RGB", (10, 10)), "PNG")
    result = decode_image(data, max_bytes=len(data), max_pixels=100)
    assert result.pixels.shape == (10, 10, 3)


@pytest.mark.parametrize(
    ("data", "max_pixels", "message"),
    [
        pytest.param(
            _png(30000, 30000, rows=b"\0" * 16),
            DEFAULT_MAX_PIXELS,
            r"900000000 pixels",
            id="png-30000x30000",  # above Pillow's own guard: refused inside Image.open
        ),
        pytest.param(
            _png(8000, 8000, rows=b"\0" * 16),
            DEFAULT_MAX_PIXELS,
            r"PNG header declares 8000x8000 = 64000000 pixels, more than the limit of 50000000",
            id="png-8000x8000",  # below Pillow's guard: only our limit stops it
        ),
        pytest.param(
            _encode(Image.new("RGB", (2, 1)), "PNG"), 1, r"2x1 = 2 pixels", id="custom-limit"
        ),
    ],
)
@pytest.mark.usefixtures("no_pixel_decoding")
def test_decompression_bombs_are_refused_from_the_header(
    data: bytes, max_pixels: int, message: str
) -> None:
    with _peak_memory() as peak, pytest.raises(DecompressionBombError, match=message):
        decode_image(data, max_pixels=max_pixels)
    assert peak.bytes < 10 * 1024 * 1024


def test_a_tiny_hand_built_png_is_fine() -> None:
    result = decode_image(_png(1, 1, rows=bytes([0, *RED])))
    _assert_valid(result)
    assert result.pixels.tolist() == [[list(RED)]]


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose SOF0 header is patched to claim another size."""
    data = bytearray(_encode(Image.new("RGB", (16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (10000, 6000)])
@pytest.mark.usefixtures("no_pixel_decoding")
def test_jpeg_declaring_a_huge_size_is_refused(width: int, height: int) -> None:
    with pytest.raises(DecompressionBombError, match=str(width * height)):
        decode_image(_jpeg_declaring(width, height))


def test_pillow_bomb_warning_raised_as_error_is_converted() -> None:
    """With warnings as errors, Pillow raises its warning inside Image.open; it is still ours."""
    data = _png(10000, 10000, rows=b"\0" * 16)  # 100M pixels: above Pillow's warning level
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(DecompressionBombError, match="100000000 pixels"):
            decode_image(data, max_pixels=200_000_000)


def test_pillow_globals_are_left_alone(photo_p: Image.Image) -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    decode_image(_encode(photo_p, "PNG"))
    with pytest.raises(DecompressionBombError):
        decode_image(_encode(photo_p, "PNG"), max_pixels=10)
    after = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    assert after == before


@pytest.mark.parametrize(
    ("data", "name"),
    [
        pytest.param(_png(0, 10, rows=b"\0" * 10), "PNG", id="png"),
        pytest.param(b"P5 0 2 255\n", "PPM", id="pgm"),
        pytest.param(_jpeg_declaring(0, 16), "JPEG", id="jpeg"),
    ],
)
def test_zero_width_is_corrupt(data: bytes, name: str) -> None:
    with pytest.raises(CorruptImageError, match=rf"^{name} data could not be decoded"):
        decode_image(data)


# --- refusals: damaged files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def encoded(photo_p: Image.Image) -> dict[str, bytes]:
    """One file per allowed format, for damaging."""
    rgb = photo_p.convert("RGB")
    return {
        "JPEG": _encode(rgb, "JPEG"),
        "JPEG-progressive": _encode(rgb, "JPEG", progressive=True),
        "PNG": _encode(rgb, "PNG"),
        "GIF": _encode(photo_p, "GIF"),
        "WEBP": _encode(rgb, "WEBP"),
        "WEBP-lossless": _encode(rgb, "WEBP", lossless=True),
        "BMP": _encode(rgb, "BMP"),
        "TIFF": _encode(rgb, "TIFF"),
        "TIFF-lzw": _encode(rgb, "TIFF", compression="tiff_lzw"),
        "PPM": _encode(rgb, "PPM"),
    }


_FORMATS = [
    *("JPEG", "JPEG-progressive", "PNG", "GIF", "WEBP", "WEBP-lossless"),
    *("BMP", "TIFF", "TIFF-lzw", "PPM"),
]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow, on cut TIFFs
@pytest.mark.parametrize("fraction", [0.002, 0.01, 0.3, 0.6, 0.95])
@pytest.mark.parametrize("name", _FORMATS)
def test_truncated_files_are_refused_as_truncated(
    encoded: dict[str, bytes], name: str, fraction: float
) -> None:
    """Any cut past the magic bytes is reported as truncation, never a half-grey image.

    Pillow says so itself for most cuts; for the rest (a PNG cut inside its header, any WebP
    cut, a TIFF missing its trailing directory) the container's own length or end marker does.
    """
    data = encoded[name]
    cut = max(int(len(data) * fraction), 12)
    with pytest.raises(TruncatedImageError, match=rf"ends early \(after {cut} bytes\)"):
        decode_image(data[:cut])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", _FORMATS)
def test_bit_flips_give_an_image_or_a_typed_refusal(
    encoded: dict[str, bytes], name: str, seed: int
) -> None:
    data = bytearray(encoded[name])
    rng = np.random.default_rng(seed)
    for position in rng.integers(0, len(data), size=4):
        data[position] ^= 1 << int(rng.integers(0, 8))
    with contextlib.suppress(InvalidImageError):
        _assert_valid(decode_image(bytes(data)))


# --- refusals: not images, or images we do not take ----------------------------------------


def _zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", b"not really")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"hello, this is plain text\n", r"starts with b'hello", id="text"),
        pytest.param(b"<!DOCTYPE html><html><body>hi</body></html>", "not a recognised", id="html"),
        pytest.param(
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
            "not a recognised",
            id="svg",
        ),
        pytest.param(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF file, not an image", id="pdf"),
        pytest.param(_zip_file(), "ZIP file, not an image", id="zip"),
        pytest.param(np.random.default_rng(7).bytes(4096), "not a recognised", id="random"),
        pytest.param(b"\xff", "not a recognised", id="one-byte"),
    ],
)
def test_non_images_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(NotAnImageError, match=message):
        decode_image(data)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        pytest.param(_encode(Image.new("RGB", (16, 16)), "ICO"), "ICO", id="ico"),
        pytest.param(b"8BPS\x00\x01" + bytes(20), "PSD", id="psd"),
        pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "EPS", id="eps"),
        pytest.param(b"\xc5\xd0\xd3\xc6" + bytes(26), "EPS", id="eps-binary"),
        pytest.param(_encode(Image.new("RGB", (16, 16)), "JPEG2000"), "JPEG 2000", id="jp2"),
        pytest.param(_encode(Image.new("RGB", (16, 16)), "AVIF"), "AVIF", id="avif"),
        pytest.param(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "HEIC", id="heic"),  # iPhones
    ],
)
def test_other_image_formats_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, data: bytes, name: str
) -> None:
    def never(self: Image.Image) -> None:
        pytest.fail("the EPS plugin (which runs Ghostscript) was offered the data")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", never)
    with pytest.raises(UnsupportedImageFormatError, match=rf"^{name} images are not supported"):
        decode_image(data)


# --- files ---------------------------------------------------------------------------------


def test_read_image_file_decodes(tmp_path: Path, photo_p: Image.Image) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(_encode(photo_p, "PNG"))
    np.testing.assert_array_equal(read_image_file(path).pixels, _rgb(photo_p))


def test_huge_file_is_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    with path.open("wb") as sparse:
        sparse.truncate(1024**3)  # 1 GiB that takes no disk space
    with _peak_memory() as peak, pytest.raises(ImageTooLargeError, match=r"1073741824 bytes"):
        read_image_file(path)
    assert peak.bytes < 1024 * 1024  # not even the max_bytes (25 MiB) a blind read would take


def test_file_of_unknown_size_is_read_only_up_to_the_limit() -> None:
    """``/dev/zero`` reports size 0 and never ends; the read must still stop."""
    with pytest.raises(ImageTooLargeError, match=r"1001 bytes, more than the limit of 1000"):
        read_image_file("/dev/zero", max_bytes=1000)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(EmptyImageError, match="0 bytes"):
        read_image_file(path)


@pytest.mark.parametrize("name", ["absent.png", "."], ids=["missing", "a-folder"])
def test_unreadable_path_is_a_typed_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnreadableFileError, match="cannot read"):
        read_image_file(tmp_path / name)


# --- the result ----------------------------------------------------------------------------


def test_pixels_cannot_be_modified(photo_p: Image.Image) -> None:
    pixels = decode_image(_encode(photo_p, "PNG")).pixels
    with pytest.raises(ValueError, match="read-only"):
        pixels[0, 0, 0] = 1


def test_result_is_frozen(photo_p: Image.Image) -> None:
    result = decode_image(_encode(photo_p, "PNG"))
    with pytest.raises(AttributeError):
        result.format = "JPEG"  # type: ignore[misc]
