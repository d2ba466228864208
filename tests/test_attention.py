"""Word → region attention maps from TACO's text adapter (app.attention), on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from app.attention import heat_overlay, word_attention
from app.errors import TacoError


@pytest.fixture(scope="module")
def image(photo) -> np.ndarray:
    return photo(70, 90, seed=3)  # not a multiple of 64: the padded border is cropped away


def test_maps_cover_the_image_and_the_words_of_the_caption(tiny_taco, image) -> None:
    wa = word_attention(tiny_taco, image, "A red skyscraper, at dusk")
    assert wa.words == ("A", "red", "skyscraper", ",", "at", "dusk")
    assert wa.maps.shape == (6, 70, 90) and wa.maps.dtype == np.float32
    assert wa.block == "injector1"
    # each image cell shares its attention out over the 38 text positions: words + the rest = 1
    assert float(wa.mass.sum()) + wa.other_mass == pytest.approx(1.0, abs=1e-4)
    assert (wa.mass > 0).all() and ((wa.maps >= 0) & (wa.maps <= 1)).all()
    ranked = wa.ranked()
    assert [w for w, _ in ranked] != list(wa.words) or len(set(wa.mass.tolist())) == 1
    assert [m for _, m in ranked] == sorted(wa.mass.tolist(), reverse=True)
    assert np.array_equal(wa.map_of("red"), wa.maps[1]) and np.array_equal(wa.map_of(2), wa.maps[2])
    with pytest.raises(TacoError, match="not a word"):
        wa.map_of("blue")


def test_maps_are_those_of_the_encoder_and_change_with_the_caption(tiny_taco, image) -> None:
    a = word_attention(tiny_taco, image, "a red car")
    again = word_attention(tiny_taco, image, "a red car")
    b = word_attention(tiny_taco, image, "a blue car")
    assert np.array_equal(a.maps, again.maps)  # deterministic
    assert not np.allclose(a.map_of("a"), b.map_of("a"))  # other words, other attention
    raw = tiny_taco.attention(image, "a red car")
    assert set(raw) == {"injector1", "extractor", "injector2"}
    assert raw["injector1"].shape == (38, 32, 32)  # 70x90 padded to 128x128, at 1/4
    np.testing.assert_allclose(raw["injector1"].sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_allclose(raw["extractor"].sum(axis=(1, 2)), 1.0, atol=1e-4)
    assert tiny_taco.attention_maps_kept() is False  # the model does not keep maps afterwards


def test_second_injector_and_long_captions(tiny_taco, image) -> None:
    caption = " ".join(["word"] * 60)  # more than the 38-token window: truncated like encode()
    wa = word_attention(tiny_taco, image, caption, block="injector2")
    assert len(wa.words) == 36  # 38 positions minus [CLS] and [SEP]
    assert wa.maps.shape[1:] == (70, 90)
    with pytest.raises(TacoError, match="block must be"):
        word_attention(tiny_taco, image, "x", block="decoder")


def test_elic_and_classical_codecs_have_no_attention(tiny_elic, image) -> None:
    from app.codecs.classical import get_classical_codec

    for codec in (tiny_elic, get_classical_codec("jpeg")):
        with pytest.raises(TacoError, match="only TACO reads a caption"):
            word_attention(codec, image, "a red car")


def test_heat_overlay_keeps_the_image_readable(image) -> None:
    heat = np.zeros(image.shape[:2], np.float32)
    heat[:, 45:] = 0.5
    heat[:, 85:] = 1.0  # the peak (white at the top of the ramp)
    out = heat_overlay(image, heat)
    assert out.shape == image.shape and out.dtype == np.uint8
    cold, hot = out[:, :40].astype(float), out[:, 50:80].astype(float)
    assert np.allclose(cold[..., 0], cold[..., 1], atol=1) and np.allclose(cold[..., 1], cold[..., 2], atol=1)
    assert hot[..., 0].mean() > hot[..., 2].mean() + 50  # warm where the word draws attention
    assert heat_overlay(image, np.zeros_like(heat)).std() > 0  # a flat map: the grey photo


def test_tokens_align_with_the_encoder_window() -> None:
    from app.text import get_text_encoder

    tokens = get_text_encoder("minilm").tokens("Sky-scrapers at dusk")
    assert len(tokens) == 38 and tokens[0].special and tokens[-1].special
    real = [t for t in tokens if not t.special]
    assert "".join(t.text for t in real) == "Sky-scrapersatdusk"
    assert real[0].word == 0 and real[-1].word == max(t.word for t in real)
