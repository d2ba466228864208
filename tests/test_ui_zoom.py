"""Zoomed crops (app/ui/zoom.py): the same region of every reconstruction, enlarged 4×."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import TacoError
from app.ui.compare import run_compare
from app.ui.model_sets import TINY_SET
from app.ui.zoom import DEFAULT_CROP, DEFAULT_SCALE, crop_box, mark_box, zoom_row


def test_crop_box_stays_inside_the_image() -> None:
    assert crop_box(100, 200, 100, 50, 64) == (18, 68, 82, 132)
    assert crop_box(100, 200, 0, 0, 64) == (0, 0, 64, 64)
    assert crop_box(100, 200, 199, 99, 64) == (36, 136, 100, 200)
    assert crop_box(40, 200, 10, 10, 64) == (0, 0, 40, 40)  # a small image: the largest square


@pytest.fixture(scope="module")
def result(photo):
    return run_compare(photo(96, 128, seed=7), "a test card", 50, model_set=TINY_SET,
                       rate_matched=True, classical=("avif",), use_cache=False)


def test_zoom_row_is_pixel_repetition_of_each_crop(result) -> None:
    row = zoom_row(result, 40, 30)
    size, scale = DEFAULT_CROP, DEFAULT_SCALE
    tiles = 4 if result.run("avif@bpp") is not None else 3
    assert row.shape[1] == tiles * size * scale + (tiles - 1) * 8
    top, left, bottom, right = crop_box(96, 128, 40, 30)
    taco_tile = row[22:, size * scale + 8: 2 * size * scale + 8]  # below the label, second tile
    expected = np.repeat(np.repeat(result.taco.recon[top:bottom, left:right], scale, 0), scale, 1)
    assert np.array_equal(taco_tile, expected)
    original = row[22:, : size * scale]
    assert np.array_equal(original[::scale, ::scale], result.image[top:bottom, left:right])


def test_outside_point_and_marked_source(result) -> None:
    with pytest.raises(TacoError, match="outside"):
        zoom_row(result, 500, 10)
    marked = mark_box(result.image, 40, 30)
    assert marked.shape == result.image.shape and not np.array_equal(marked, result.image)
    assert (marked[crop_box(96, 128, 40, 30)[0], 20] == [255, 40, 40]).all()


def test_callback_zooms_at_the_slider_position(tmp_path, photo) -> None:
    from PIL import Image

    from app.ui.backend import PackageBackend
    from app.ui.events import Callbacks

    path = tmp_path / "card.png"
    Image.fromarray(photo(96, 128, seed=7)).save(path)
    cb = Callbacks(PackageBackend(), {TINY_SET.label: TINY_SET}, [])
    values = [str(path), "a test card", 50, False, 0.3, TINY_SET.label, False, "TACO | ELIC",
              "standard"]
    noop = lambda *a, **k: None  # noqa: E731
    src, crops = cb.zoom_at(*values, 0, 100, progress=noop)
    top, left, bottom, right = crop_box(96, 128, 0, 95)  # bottom-left corner
    assert (top, left) == (32, 0)
    assert np.array_equal(crops[22:, :DEFAULT_CROP * DEFAULT_SCALE][::DEFAULT_SCALE, ::DEFAULT_SCALE],
                          np.asarray(Image.open(path).convert("RGB"))[top:bottom, left:right])
    assert src.shape == (96, 128, 3)
