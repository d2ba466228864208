"""Inputs of an evaluation: the image folder, the image files, and the captions JSON."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from app.errors import ImageInputError
from app.eval import captions as eval_captions

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def list_images(folder: Path, limit: int | None = None) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name, at most ``limit``."""
    if not folder.is_dir():
        raise ImageInputError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[: max(0, limit)]
    if not files:
        raise ImageInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def load_rgb(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 (EXIF orientation applied, any mode converted to RGB).

    No resizing: evaluation is at full resolution.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            upright = ImageOps.exif_transpose(im)
            return np.asarray(upright.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageInputError(f"cannot read image {path.name}: {exc}") from exc


def load_captions(path: Path | None) -> dict[str, str]:
    """Captions JSON → {key: first caption} (the ``given`` policy; all captions:
    `app.eval.captions.load_caption_lists`)."""
    return {k: (v[0] if v else "") for k, v in eval_captions.load_caption_lists(path).items()}


def caption_for(captions: Mapping[str, str], image: Path) -> str:
    """The caption of ``image``: by file name, else by stem, else ``""``."""
    return captions.get(image.name, captions.get(image.stem, ""))
