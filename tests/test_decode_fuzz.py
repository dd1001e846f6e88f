"""Fuzzing decode_image: whatever the bytes, a valid image or an InvalidImageError, nothing else.

Inputs are arbitrary bytes and small valid files (PNG, JPEG with and without EXIF, MPO, GIF,
animated GIF and PNG, WebP, TIFF, BMP, PPM) mutated by bit flips, overwrites, insertions,
deletions and cuts. The default example count keeps this file to a few seconds; for a real
hunt run, for example::

    FACERANK_FUZZ_EXAMPLES=20000 pytest tests/test_decode_fuzz.py -p no:cacheprovider

Failures are saved in ``.hypothesis/`` and replayed first on the next run.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage.data import astronaut

from facerank.errors import InvalidImageError, TruncatedImageError
from facerank.imaging import ALLOWED_FORMATS, decode_image

EXAMPLES = int(os.environ.get("FACERANK_FUZZ_EXAMPLES", "300"))

# Mutated headers can claim any size; a small pixel limit keeps every example fast while the
# header check itself is still exercised on each of them.
MAX_PIXELS = 1 << 18

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the first examples pay for plugin imports; speed is not the property
    suppress_health_check=[HealthCheck.too_slow],
)

# Pillow warns (it does not raise) about corrupt EXIF and implausible sizes; that is fine here.
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning"
)


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _seed_files() -> dict[str, bytes]:
    """Small valid files, one per format and layout worth mutating."""
    rgb = Image.fromarray(astronaut()[64:160:4, 160:288:4])  # 24x32 of the face
    frames = [rgb, rgb.rotate(90), rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated: dict[str, Any] = {"save_all": True, "append_images": frames[1:]}
    exif = Image.Exif()
    exif[0x0112] = 6
    gray16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    return {
        "PNG": _encode(rgb, "PNG"),
        "PNG-palette": _encode(rgb.quantize(16), "PNG", transparency=0),
        "APNG": _encode(rgb, "PNG", **animated),
        "JPEG": _encode(rgb, "JPEG"),
        "JPEG-progressive": _encode(rgb, "JPEG", progressive=True),
        "JPEG-exif": _encode(rgb, "JPEG", exif=exif),
        "JPEG-cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
        "MPO": _encode(rgb, "MPO", **animated),
        "PNG-16-bit-gray": _encode(gray16, "PNG"),
        "GIF": _encode(rgb, "GIF"),
        "GIF-animated": _encode(rgb, "GIF", **animated),
        "WEBP": _encode(rgb, "WEBP"),
        "TIFF-lzw": _encode(rgb, "TIFF", compression="tiff_lzw"),
        "BMP": _encode(rgb, "BMP"),
        "PPM": _encode(rgb, "PPM"),
    }


SEEDS = _seed_files()


def _flip(buffer: bytearray, at: int, payload: bytes) -> None:
    buffer[at] ^= 1 << (payload[0] % 8)


def _overwrite(buffer: bytearray, at: int, payload: bytes) -> None:
    buffer[at : at + len(payload)] = payload


def _insert(buffer: bytearray, at: int, payload: bytes) -> None:
    buffer[at:at] = payload


def _delete(buffer: bytearray, at: int, payload: bytes) -> None:
    del buffer[at : at + len(payload)]


def _cut(buffer: bytearray, at: int, _payload: bytes) -> None:
    del buffer[at:]


MUTATIONS: dict[str, Callable[[bytearray, int, bytes], None]] = {
    "flip": _flip,
    "overwrite": _overwrite,
    "insert": _insert,
    "delete": _delete,
    "cut": _cut,
}

mutation_lists = st.lists(
    st.tuples(
        st.sampled_from(sorted(MUTATIONS)),
        st.integers(min_value=0, max_value=2**32),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=6,
)


def _mutate(data: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, payload in mutations:
        if not buffer:
            break
        MUTATIONS[kind](buffer, position % len(buffer), payload)
    return bytes(buffer)


def _decodes_or_refuses(data: bytes) -> None:
    """The whole contract: a well-formed result within the limits, or a typed refusal."""
    try:
        result = decode_image(data, max_pixels=MAX_PIXELS)
    except InvalidImageError:
        return
    height, width, channels = result.pixels.shape
    assert result.pixels.dtype == np.uint8
    assert channels == 3
    assert 0 < height * width <= MAX_PIXELS
    assert result.pixels.flags.c_contiguous
    assert not result.pixels.flags.writeable
    assert result.format in ALLOWED_FORMATS
    assert result.frames >= 1
    assert 1 <= result.orientation_applied <= 8


@FUZZ_SETTINGS
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes(data: bytes) -> None:
    _decodes_or_refuses(data)


@FUZZ_SETTINGS
@given(seed=st.sampled_from(sorted(SEEDS)), mutations=mutation_lists)
def test_mutated_valid_files(seed: str, mutations: list[tuple[str, int, bytes]]) -> None:
    _decodes_or_refuses(_mutate(SEEDS[seed], mutations))


@FUZZ_SETTINGS
@given(seed=st.sampled_from(sorted(SEEDS)), fraction=st.floats(min_value=0, max_value=1))
def test_cut_files_are_truncated_or_still_complete(seed: str, fraction: float) -> None:
    """A prefix longer than the magic bytes either still holds a whole first frame or is
    reported as truncated, never as corrupt or as something else."""
    data = SEEDS[seed]
    cut = max(16, int(len(data) * fraction))
    try:
        result = decode_image(data[:cut])
    except TruncatedImageError:
        return
    assert result.pixels.shape[2] == 3
