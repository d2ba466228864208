"""Which image regions each caption word draws attention to, in TACO's encoder.

TACO's text adapter is cross-attention between image positions and the caption's token states.
Its first Injector (1/4 resolution) gives, for every image position, how its attention is shared
out over the 38 text positions. Summing a word's sub-word tokens gives that word's share at every
position: a heat-map of where the encoder looks at that word. The mean of a word's map over the
image (its *attention mass*) ranks the words; special and padding positions (which the official
adapter attends to as well) keep the rest of the mass, reported as one number.

This shows what the caption does where the bitrate and LPIPS barely move: the maps change with
the words, the decoder never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.errors import TacoError
from app.images import ImageLike, to_rgb_array

#: The adapter block read by default: the first Injector, at 1/4 of the image resolution.
DEFAULT_BLOCK = "injector1"
#: Downsampling of each Injector block's attention grid relative to the (padded) image.
INJECTOR_STRIDES = {"injector1": 4, "injector2": 8}


@dataclass(frozen=True)
class WordAttention:
    """Per-word attention of one image and caption.

    words: the caption's words, in order (only those the encoder saw: a caption longer than the
      encoder's window is truncated);
    maps: (n_words, H, W) float32 share of each image position's attention that goes to the word
      (0–1), smoothed and upsampled to the image's own size (see `_display_maps`);
    mass: (n_words,) mean of each map: the word's share of all attention;
    other_mass: the share that goes to special and padding positions;
    block: the adapter block read.
    """

    words: tuple[str, ...]
    maps: np.ndarray
    mass: np.ndarray
    other_mass: float
    block: str

    def ranked(self) -> list[tuple[str, float]]:
        """(word, mass) from the most attended word to the least (ties keep caption order)."""
        order = sorted(range(len(self.words)), key=lambda i: (-float(self.mass[i]), i))
        return [(self.words[i], float(self.mass[i])) for i in order]

    def map_of(self, word: str | int) -> np.ndarray:
        """The map of a word, by index or by its text (first occurrence)."""
        if isinstance(word, int):
            return self.maps[word]
        try:
            return self.maps[self.words.index(word)]
        except ValueError:
            raise TacoError(f"{word!r} is not a word of the caption") from None


def word_attention(codec: object, image: ImageLike, caption: str, lmbda: float | None = None,
                   block: str = DEFAULT_BLOCK) -> WordAttention:
    """The per-word attention maps of ``codec`` (a TACO `LearnedCodec`) for an image and caption."""
    from app.codecs.learned import LearnedCodec
    from app.text import clean_caption, get_text_encoder

    if not isinstance(codec, LearnedCodec) or codec.capabilities.text_encoder is None:
        raise TacoError("attention maps need a TACO model: only TACO reads a caption")
    if block not in INJECTOR_STRIDES:
        raise TacoError(f"block must be one of {', '.join(INJECTOR_STRIDES)}, got {block!r}")
    arr = to_rgb_array(image)
    h, w = arr.shape[:2]
    text = clean_caption(caption or "")
    grid = codec.attention(arr, text, lmbda)[block]  # (L, h', w') over the padded image
    tokens = get_text_encoder(codec.capabilities.text_encoder).tokens(text)
    if len(tokens) != grid.shape[0]:
        raise TacoError(f"{len(tokens)} tokens for {grid.shape[0]} attention positions")
    stride = INJECTOR_STRIDES[block]
    gh, gw = -(-h // stride), -(-w // stride)  # the grid cells that cover the real image
    grid = grid[:, :gh, :gw]

    n_words = 1 + max((t.word for t in tokens if t.word is not None), default=-1)
    pieces: list[list[str]] = [[] for _ in range(n_words)]
    word_grid = np.zeros((n_words, gh, gw), np.float32)
    for t, cell in zip(tokens, grid, strict=True):
        if t.word is not None:
            pieces[t.word].append(t.text)
            word_grid[t.word] += cell
    # sub-word pieces are contiguous slices of the caption: joined, they give the word back
    words = tuple("".join(p) for p in pieces)
    total = float(grid.sum(axis=0).mean()) or 1.0  # 1 for an Injector (shares sum to 1 per cell)
    mass = (word_grid.mean(axis=(1, 2)) / total).astype(np.float32)
    maps = _display_maps(word_grid, h, w)
    return WordAttention(words, np.ascontiguousarray(maps), mass,
                         float(max(0.0, 1.0 - mass.sum())), block)


def _display_maps(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """(n, gh, gw) attention grids → (n, h, w) maps for display.

    The Injector's grid follows image texture cell by cell (an edge draws a different share than
    its neighbour), which hides the regions a word draws to: each grid is smoothed with a Gaussian
    of 1.5 cells, then upsampled bilinearly to the image. The mass is computed before this step.
    """
    from scipy.ndimage import gaussian_filter, zoom

    out = np.empty((grid.shape[0], h, w), np.float32)
    for i, g in enumerate(grid):
        smooth = gaussian_filter(g.astype(np.float64), sigma=1.5, mode="nearest")
        big = zoom(smooth, (h / g.shape[0], w / g.shape[1]), order=1, mode="nearest",
                   grid_mode=True)
        out[i] = big[:h, :w]
    return out


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.75) -> np.ndarray:
    """``image`` (H, W, 3 uint8) in grey, with ``heat`` (H, W) painted over it in warm colours.

    The heat is stretched between its 2nd and 99th percentiles (attention shares differ by a few
    per cent between regions, so an absolute scale would show a flat tint), then drawn with an
    opacity that grows with it: the photo stays readable where the word draws little attention.
    """
    h = np.asarray(heat, dtype=np.float32)
    lo, hi = np.percentile(h, [2.0, 99.0]) if h.size else (0.0, 0.0)
    h = np.clip((h - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(h)
    # black -> red -> yellow -> white, a perceptually ordered warm ramp
    ramp = np.stack([np.clip(3 * h, 0, 1), np.clip(3 * h - 1, 0, 1), np.clip(3 * h - 2, 0, 1)], -1)
    ramp = np.clip(ramp + 0.25 * (h[..., None] > 0), 0, 1)  # warm from the first step up
    grey = image.astype(np.float32).mean(axis=2, keepdims=True) / 255.0
    a = alpha * h[..., None]
    out = (1 - a) * grey + a * ramp
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
