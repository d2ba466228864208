"""Word → region attention for the current image: where TACO's encoder looks at each caption word.

The maps come from the cross-attention weights of the text adapter in TACO's encoder
(`app.attention`); they are computed once per (image, caption, model) and cached, so choosing
another word only re-draws the overlay.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import TacoError
from app.ui.backend import Backend, default_backend
from app.ui.cache import RESULTS_CACHE, image_digest
from app.ui.compare import load_image
from app.ui.model_sets import ModelSet, pick_model_set

ATTENTION_NOTE = (
    "Where TACO's encoder looks at each word: the share of every image position's attention "
    "(first text adapter block, 1/4 resolution, smoothed) that goes to the chosen word. The "
    "decoder never sees the caption; these maps show what it changes in the encoder, where the "
    "bitrate and LPIPS barely move."
)


@dataclass(frozen=True)
class AttentionView:
    """What the attention tab shows."""

    overlay: np.ndarray
    words: list[str]
    word: str
    ranking_md: str


def _attention(model_set: ModelSet, arr: np.ndarray, caption: str, backend: Backend) -> Any:
    key = ("attention", image_digest(arr), model_set.taco, caption)
    hit = RESULTS_CACHE.get(key)
    if hit is None:
        codec = backend.load_codec(model_set.taco, allow_random=model_set.allow_random)
        if codec.capabilities.text_encoder is None:
            raise TacoError(f"{model_set.taco} reads no caption: no attention to show")
        hit = backend.word_attention(codec, arr, caption)
        RESULTS_CACHE.put(key, hit)
    return hit


def ranking_markdown(ranked: list[tuple[str, float]], other: float, chosen: str) -> str:
    """The words by attention mass, as a Markdown table (the chosen word in bold)."""
    rows = ["| Word | Attention share |", "|---|---:|"]
    for word, mass in ranked:
        text = html.escape(word, quote=False).replace("|", "\\|")
        rows.append(f"| {'**' + text + '**' if word == chosen else text} | {100 * mass:.1f} % |")
    rows.append(f"| *[CLS], [SEP], padding* | {100 * other:.1f} % |")
    return "\n".join(rows)


def run_attention(image: Any, caption: str, word: str | None = None,
                  model_set: ModelSet | str | None = None,
                  backend: Backend | None = None) -> AttentionView:
    """The heat-map of ``word`` (default: the most attended word) over the image."""
    from app.attention import heat_overlay

    backend = backend or default_backend()
    chosen_set = pick_model_set(model_set)
    arr, _, _ = load_image(image, backend)
    text = backend.clean_caption(caption or "")
    if not text:
        raise TacoError("type a caption first: the maps show where each of its words is attended")
    wa = _attention(chosen_set, arr, text, backend)
    ranked = wa.ranked()
    if not ranked:
        raise TacoError("the caption has no words the text encoder keeps")
    pick: str = word if word is not None and word in wa.words else ranked[0][0]
    return AttentionView(heat_overlay(arr, wa.map_of(pick)), list(wa.words), pick,
                         ranking_markdown(ranked, wa.other_mass, pick))
