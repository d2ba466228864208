"""Zoomed crops, as papers show them: the same small region of the original and of each
reconstruction, enlarged by pixel repetition (nearest neighbour: no smoothing that would hide the
artefacts), side by side on one row."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from app.errors import TacoError
from app.ui.compare import CompareResult

#: Rows shown, in order, with their labels (rows a comparison did not produce are left out).
ZOOM_ROWS: tuple[tuple[str, str], ...] = (
    ("original", "Original"),
    ("taco", "TACO"),
    ("elic", "ELIC (same λ)"),
    ("avif@bpp", "AVIF @ TACO bpp"),
)
DEFAULT_CROP = 64
DEFAULT_SCALE = 4
_LABEL_H = 22


def crop_box(height: int, width: int, x: int, y: int, size: int = DEFAULT_CROP
             ) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a ``size``-pixel square centred on (x, y), kept inside."""
    size = max(8, min(size, height, width))
    top = min(max(int(y) - size // 2, 0), height - size)
    left = min(max(int(x) - size // 2, 0), width - size)
    return top, left, top + size, left + size


def zoom_row(result: CompareResult, x: int, y: int, size: int = DEFAULT_CROP,
             scale: int = DEFAULT_SCALE) -> np.ndarray:
    """One image: the crops around (x, y) of the original and each reconstruction, ``scale``×
    enlarged (nearest neighbour), each with its name and bpp above it."""
    h, w = result.image.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise TacoError(f"point ({x}, {y}) is outside the {w}×{h} image")
    top, left, bottom, right = crop_box(h, w, x, y, size)
    tiles: list[np.ndarray] = []
    for row_id, label in ZOOM_ROWS:
        if row_id == "original":
            src, text = result.image, label
        else:
            run = result.run(row_id)
            if run is None:
                continue
            src, text = run.recon, f"{label} · {run.bpp:.3f} bpp"
        crop = src[top:bottom, left:right]
        big = np.repeat(np.repeat(crop, scale, axis=0), scale, axis=1)
        tile = Image.new("RGB", (big.shape[1], big.shape[0] + _LABEL_H), "white")
        tile.paste(Image.fromarray(np.ascontiguousarray(big)), (0, _LABEL_H))
        ImageDraw.Draw(tile).text((4, 4), text, fill=(20, 20, 20))
        tiles.append(np.asarray(tile))
    gap = np.full((tiles[0].shape[0], 8, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for i, t in enumerate(tiles):
        parts.extend([gap, t] if i else [t])
    return np.concatenate(parts, axis=1)


def mark_box(image: np.ndarray, x: int, y: int, size: int = DEFAULT_CROP) -> np.ndarray:
    """The image with the crop's square drawn on it (where the zoom comes from)."""
    h, w = image.shape[:2]
    top, left, bottom, right = crop_box(h, w, x, y, size)
    pil = Image.fromarray(image.copy())
    ImageDraw.Draw(pil).rectangle((left, top, right - 1, bottom - 1), outline=(255, 40, 40),
                                  width=2)
    return np.asarray(pil)
