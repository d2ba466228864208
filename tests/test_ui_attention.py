"""The demo's caption-attention tab (app/ui/attention_tab.py) on the tiny random TACO."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.errors import TacoError
from app.ui.attention_tab import ranking_markdown, run_attention
from app.ui.cache import RESULTS_CACHE
from app.ui.model_sets import TINY_SET


@pytest.fixture()
def image_path(tmp_path, photo) -> str:
    path = tmp_path / "boat.png"
    Image.fromarray(photo(80, 112, seed=4)).save(path)
    return str(path)


def test_the_most_attended_word_is_shown_first_and_others_on_request(image_path) -> None:
    view = run_attention(image_path, "a small red boat", model_set=TINY_SET)
    assert view.words == ["a", "small", "red", "boat"]
    assert view.overlay.shape == (80, 112, 3) and view.overlay.dtype == np.uint8
    first = view.ranking_md.splitlines()[2]
    assert view.word in first and "**" in first  # the default word is the top-ranked one, bold
    assert view.ranking_md.count("%") == 5  # four words + the special / padding positions
    other = next(w for w in view.words if w != view.word)
    again = run_attention(image_path, "a small red boat", other, model_set=TINY_SET)
    assert again.word == other and not np.array_equal(again.overlay, view.overlay)
    assert f"**{other}**" in again.ranking_md


def test_maps_are_computed_once_per_image_and_caption(image_path) -> None:
    RESULTS_CACHE.clear()
    run_attention(image_path, "a small red boat", model_set=TINY_SET)
    misses = RESULTS_CACHE.misses
    run_attention(image_path, "a small red boat", "red", model_set=TINY_SET)
    assert RESULTS_CACHE.misses == misses  # another word: the cached maps, no new forward pass


def test_clear_messages_for_missing_input(image_path) -> None:
    with pytest.raises(TacoError, match="type a caption"):
        run_attention(image_path, "   ", model_set=TINY_SET)
    with pytest.raises(TacoError, match="no image"):
        run_attention(None, "a boat", model_set=TINY_SET)


def test_ranking_escapes_words() -> None:
    md = ranking_markdown([("<b>", 0.25), ("a|b", 0.5)], 0.25, "a|b")
    assert "&lt;b&gt;" in md and "**a\\|b**" in md and "25.0 %" in md
