"""Input images: every odd kind is converted (with a notice) or refused with one line."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.errors import ImageInputError
from app.images import MAX_PIXELS, prepare_image


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _rgb(w=40, h=30) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def test_rgb_png_passes_through_unchanged():
    img = _rgb()
    arr, notes = prepare_image(_png(img))
    assert arr.dtype == np.uint8 and arr.shape == (30, 40, 3)
    assert np.array_equal(arr, np.asarray(img)) and notes == []


def test_rgba_is_flattened_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    arr, notes = prepare_image(_png(rgba))
    assert (arr == 255).all() and any("transparency" in n for n in notes)


def test_sixteen_bit_grey():
    a = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    arr, notes = prepare_image(_png(Image.fromarray(a, "I;16")))
    assert arr.shape == (64, 64, 3) and any("16-bit" in n for n in notes)
    assert arr.max() > 200


def test_exif_orientation_is_applied():
    img = _rgb(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW on display
    arr, notes = prepare_image(_png(img, "JPEG", exif=exif.tobytes()))
    assert arr.shape == (40, 20, 3) and "EXIF orientation applied" in notes


def test_downscale_notice():
    arr, notes = prepare_image(_rgb(300, 100), max_side=150)
    assert arr.shape == (50, 150, 3) and any("downscaled" in n for n in notes)


def test_extreme_aspect_ratio_survives_downscale():
    arr, _ = prepare_image(np.zeros((3, 5000, 3), np.uint8), max_side=1000)
    assert arr.shape[0] >= 1 and arr.shape[1] == 1000


@pytest.mark.parametrize(
    "data, msg",
    [
        (b"", "empty"),
        (b"hello, I am not an image", "not an image"),
        (_png(_rgb())[:60], "cannot decode"),
    ],
)
def test_bad_bytes(data, msg):
    with pytest.raises(ImageInputError, match=msg):
        prepare_image(data)


def test_decompression_bomb_is_refused_before_decoding():
    side = int(MAX_PIXELS**0.5) + 100
    data = _png(Image.new("1", (side, side)))
    with pytest.raises(ImageInputError, match="MP"):
        prepare_image(data)


def test_bad_array_shape():
    with pytest.raises(ImageInputError, match="HxWx3"):
        prepare_image(np.zeros((4, 4, 2), np.uint8))
