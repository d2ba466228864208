"""Turning whatever a user uploads into an 8-bit RGB array the codecs can take.

Everything that can go wrong with an input image ends here as an :class:`ImageInputError` with a
one-line message; everything that is converted on the way (EXIF rotation, transparency, 16-bit,
a downscale) is reported back as a short notice the UI can show.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ImageInputError, first_line

#: Longest side the demo works on (CPU budget: one 1/2-resolution activation of the full-width
#: model is about 0.8 GB at 2048², so the long side is capped).
DEFAULT_MAX_SIDE = 1024
#: Images with more pixels than this are refused before decoding (decompression bombs).
MAX_PIXELS = 64_000_000
#: Files larger than this are refused before decoding.
MAX_FILE_BYTES = 64 * 1024 * 1024

ImageLike = Image.Image | np.ndarray | str | os.PathLike | bytes

# Pillow's own bomb guard, tightened to our limit (it raises above 2x this value; we check first).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

#: Decoders Pillow may use on an upload (robustness review): the formats people actually send.
#: Everything else (EPS, which runs Ghostscript on the file; PSD, FITS, PCX, QOI, SGI, ... rarely
#: used decoders with a history of CVEs) is refused as "not an image Pillow can read". JPEG covers
#: MPO (phone photos); AVIF is only used where this Pillow build has a decoder.
ALLOWED_FORMATS: tuple[str, ...] = (
    "PNG", "JPEG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "ICO", "PPM", "JPEG2000", "TGA", "AVIF",
)


def _allowed_formats() -> list[str]:
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


def _open(obj: str | os.PathLike | bytes) -> Image.Image:
    if isinstance(obj, bytes):
        if len(obj) == 0:
            raise ImageInputError("the image file is empty (0 bytes)")
        if len(obj) > MAX_FILE_BYTES:
            raise ImageInputError(f"the image file is too large (> {MAX_FILE_BYTES >> 20} MB)")
        src: io.BytesIO | Path = io.BytesIO(obj)
    else:
        src = Path(obj)
        if not src.is_file():
            raise ImageInputError(f"no such image file: {src.name}")
        size = src.stat().st_size
        if size == 0:
            raise ImageInputError(f"{src.name} is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageInputError(f"{src.name} is too large (> {MAX_FILE_BYTES >> 20} MB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(src, formats=_allowed_formats())
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageInputError(
                    f"image is {w}x{h} ({w * h / 1e6:.0f} MP): more than the "
                    f"{MAX_PIXELS / 1e6:.0f} MP limit"
                )
            img.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(f"image refused: more than {MAX_PIXELS / 1e6:.0f} MP") from None
    except UnidentifiedImageError:
        raise ImageInputError("not an image Pillow can read (unknown or unsupported format)") from None
    except Exception as exc:
        # Robustness review: on hostile bytes Pillow's decoders raise much more than OSError /
        # SyntaxError / ValueError (fuzzing found IndexError in GIF, TypeError in TIFF,
        # struct.error, ...). Any of them is a bad file for the user, never a crash.
        raise ImageInputError(f"cannot decode the image (truncated or corrupted?): {first_line(exc)}") from None
    return img


def _to_rgb(img: Image.Image, notices: list[str]) -> Image.Image:
    """Convert any Pillow mode to RGB, flattening transparency onto white."""
    frames = int(getattr(img, "n_frames", 1))  # only multi-frame formats have n_frames
    if frames > 1:
        notices.append(f"animated image: only the first of {frames} frames is used")
        img.seek(0)
    try:
        transposed = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the image
        transposed = None
    if transposed is not None and transposed is not img:
        # only 2..8 rotate or flip; Pillow returns an unchanged copy for other values (e.g. 9)
        if img.getexif().get(0x0112, 1) in range(2, 9):
            notices.append("EXIF orientation applied")
        img = transposed
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # a float TIFF may hold NaN / inf: refuse it like a float array (no garbage cast)
        if not np.isfinite(arr).all():
            raise ImageInputError("image contains NaN or infinity")
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        notices.append(f"{'16-bit' if hi > 255 else mode} image converted to 8 bits")
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        alpha_min = rgba.getchannel("A").getextrema()[0]
        if isinstance(alpha_min, int | float) and alpha_min < 255:
            notices.append("transparency flattened onto white")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "CMYK":
        notices.append("CMYK image converted to RGB")
    elif mode in ("RGB;16", "RGBX", "YCbCr", "LAB", "HSV"):
        pass
    elif mode in ("L", "1"):
        notices.append("greyscale image converted to RGB")
    return img.convert("RGB")


def _converted(img: Image.Image, notices: list[str]) -> Image.Image:
    """`_to_rgb`, with any Pillow failure on the way (a corrupt later frame found while counting
    frames, a mode without an RGB conversion such as "La") turned into one line."""
    try:
        return _to_rgb(img, notices)
    except ImageInputError:
        raise
    except Exception as exc:
        raise ImageInputError(f"cannot convert the image to RGB: {first_line(exc)}") from None


def prepare_image(
    obj: ImageLike, max_side: int | None = DEFAULT_MAX_SIDE
) -> tuple[np.ndarray, list[str]]:
    """Load and normalise an input image.

    Returns an (H, W, 3) uint8 array and a list of notices describing every conversion made.
    Raises :class:`ImageInputError` (one line) for anything that cannot be used.
    """
    notices: list[str] = []
    if obj is None:
        raise ImageInputError("no image given")
    if isinstance(obj, np.ndarray):
        arr = obj
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ImageInputError(f"expected an HxWx3 image array, got shape {tuple(obj.shape)}")
        if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
            raise ImageInputError(f"image refused: more than {MAX_PIXELS / 1e6:.0f} MP")
        if arr.dtype == np.uint16:
            arr = (arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
            notices.append("16-bit image converted to 8 bits")
        elif arr.dtype in (np.float32, np.float64):
            if not np.isfinite(arr).all():
                raise ImageInputError("image array contains NaN or infinity")
            scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
            arr = np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
        elif arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        elif arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        elif arr.shape[2] == 4:
            img = _to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA"), notices)
            arr = np.asarray(img)
        img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    elif isinstance(obj, Image.Image):
        w, h = obj.size
        if w * h > MAX_PIXELS:
            raise ImageInputError(f"image refused: more than {MAX_PIXELS / 1e6:.0f} MP")
        if w < 1 or h < 1:
            raise ImageInputError("image has no pixels")
        img = _converted(obj, notices)
    elif isinstance(obj, str | os.PathLike | bytes):
        img = _converted(_open(obj), notices)
    else:
        raise ImageInputError(f"unsupported image input of type {type(obj).__name__}")

    if max_side is not None and max(img.size) > max_side:
        w, h = img.size
        s = max_side / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
        notices.append(f"downscaled from {w}x{h} to {nw}x{nh} (max side {max_side} px)")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8)), notices


def to_rgb_array(obj: ImageLike) -> np.ndarray:
    """Strict conversion used by the codecs: no downscale, notices dropped."""
    arr, _ = prepare_image(obj, max_side=None)
    return arr
