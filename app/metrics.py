"""Image-quality and rate metrics, with the demo's and the paper's conventions spelled out.

Inputs
------
"Image" below means a PIL image (converted to RGB) or an HxWx3 ``uint8`` numpy array. The float
functions take HxWx3 float arrays in [0, 1] (values outside are kept: "unclamped").

Conventions
-----------
* `psnr` — the demo's headline PSNR: 8-bit RGB, peak 255, MSE over all pixels and channels.
  A codec's float output must be clamped and rounded to 8 bits first (what a user gets as PNG).
* `psnr_float` — the paper's PSNR: −10·log10(MSE) on [0, 1] RGB with the **unclamped,
  unrounded** reconstruction x̂. For a codec whose output is 8-bit anyway (JPEG, WebP, AVIF),
  it equals `psnr`.
* `ms_ssim` — MS-SSIM as ``pytorch_msssim.ms_ssim(data_range=1)`` defines it, on [0, 1] RGB,
  computed by `app.msssim` (same values to 1e-6, the reference's half kept across calls). Its 5
  scales need a shorter side > 160 px; for smaller images *both* images are first resized
  (bilinear, antialiased) so that the shorter side is 256 px, aspect ratio kept. `ms_ssim_needs_resize` says when that
  happens, so callers can label the number.
* `lpips` — LPIPS v0.1 AlexNet (`app.lpips_offline`), full resolution, mean over the image.
  ``convention="standard"``: [0, 1] inputs scaled to [-1, 1] (``normalize=True``), the headline.
  ``convention="paper"``: [0, 1] fed unscaled (``normalize=False``) as TACO's code does; labelled
  "LPIPS (paper convention)". The two are different numbers; never mix them in one table column.
* `bpp` — 8·bytes / (H·W) of the original (unpadded) image, from real encoded bytes.

In all functions an identical pair gives the perfect value (PSNR ``inf``, MS-SSIM 1, LPIPS 0).
Every function raises `ImageInputError` for unusable input or mismatched shapes.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from app.errors import ImageInputError
from app.hashing import array_digest
from app.lru import LRUCache

if TYPE_CHECKING:
    import torch
    from PIL import Image

LpipsConvention = Literal["standard", "paper"]

#: pytorch-msssim needs the shorter side strictly above (win_size − 1)·2⁴ = 160 px.
MS_SSIM_MIN_SIDE = 161
#: Shorter side both images are resized to when they are too small for MS-SSIM.
MS_SSIM_RESIZE_SIDE = 256
#: Above this resized long side (aspect ratio > 16) MS-SSIM is reported as NaN (n/a).
MS_SSIM_MAX_RESIZED_SIDE = 4096


def to_uint8_rgb(image: Image.Image | np.ndarray, what: str = "image") -> np.ndarray:
    """An HxWx3 ``uint8`` array from a PIL image (any mode → RGB) or an HxWx3 ``uint8`` array."""
    if isinstance(image, np.ndarray):
        arr = image
    else:
        try:
            arr = np.asarray(image.convert("RGB"))
        except AttributeError as exc:
            raise ImageInputError(f"{what}: expected a PIL image or numpy array, got {type(image).__name__}") from exc
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageInputError(f"{what}: expected an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageInputError(f"{what}: empty image {arr.shape}")
    return arr


def _pair_uint8(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x = to_uint8_rgb(a, "reference")
    y = to_uint8_rgb(b, "reconstruction")
    if x.shape != y.shape:
        raise ImageInputError(f"image sizes differ: {x.shape} vs {y.shape}")
    return x, y


def _to_float01(image: Any, what: str) -> np.ndarray:
    """Float64 HxWx3 in [0, 1] (uint8 / PIL scaled by 1/255; float arrays kept as they are)."""
    if isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ImageInputError(f"{what}: expected an HxWx3 float array, got {image.shape}")
        return image.astype(np.float64, copy=False)
    return to_uint8_rgb(image, what).astype(np.float64) / 255.0


def _pair_float(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x = _to_float01(a, "reference")
    y = _to_float01(b, "reconstruction")
    if x.shape != y.shape:
        raise ImageInputError(f"image sizes differ: {x.shape} vs {y.shape}")
    return x, y


def psnr(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    """PSNR in dB of two 8-bit RGB images (peak 255); ``inf`` when identical."""
    x, y = _pair_uint8(a, b)
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def psnr_float(x: np.ndarray | Image.Image, x_hat: np.ndarray | Image.Image) -> float:
    """Paper-convention PSNR: −10·log10(MSE) on [0, 1] RGB, x̂ neither clamped nor rounded.

    Float arrays are taken as [0, 1] values as they are; uint8 / PIL inputs are divided by 255
    (so for an 8-bit x̂ the result equals `psnr`).
    """
    a, b = _pair_float(x, x_hat)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def ms_ssim_needs_resize(height: int, width: int) -> bool:
    """True when MS-SSIM is computed on copies resized to a 256-px shorter side (see module doc)."""
    return min(height, width) < MS_SSIM_MIN_SIDE


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)[None]


def ms_ssim(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    """MS-SSIM (``data_range=1``) on [0, 1] RGB; ``a`` is the reference (its half is kept).

    Images whose shorter side is ≤ 160 px are both resized to a 256-px shorter side first
    (`ms_ssim_needs_resize`); label such values.
    """
    import torch.nn.functional as F

    from app.msssim import ms_ssim_tensors, reference_key

    x, y = _pair_float(a, b)
    tx, ty = _to_tensor(x), _to_tensor(y)
    h, w = x.shape[:2]
    if ms_ssim_needs_resize(h, w):
        scale = MS_SSIM_RESIZE_SIDE / min(h, w)
        if max(h, w) * scale > MS_SSIM_MAX_RESIZED_SIDE:
            # A sliver (e.g. 3x100000 px) would be blown up to gigabytes: MS-SSIM is undefined here.
            return float("nan")
        size = (max(MS_SSIM_RESIZE_SIDE, round(h * scale)), max(MS_SSIM_RESIZE_SIDE, round(w * scale)))
        tx = F.interpolate(tx, size=size, mode="bilinear", align_corners=False, antialias=True)
        ty = F.interpolate(ty, size=size, mode="bilinear", align_corners=False, antialias=True)
    else:
        size = None
    key = reference_key(a if isinstance(a, np.ndarray) else x, size)
    return ms_ssim_tensors(tx, ty, key=key)


def lpips(
    a: Image.Image | np.ndarray,
    b: Image.Image | np.ndarray,
    convention: LpipsConvention = "standard",
    net: str = "alex",
) -> float:
    """LPIPS v0.1 (offline AlexNet by default) between two images at full resolution.

    ``convention="standard"`` scales [0, 1] to [-1, 1] (``normalize=True``; the headline number);
    ``"paper"`` feeds [0, 1] unscaled, as TACO's evaluation code does. Float inputs are taken as
    [0, 1] and are not clamped.

    ``a`` is the reference: its network features are kept for the last few references
    (`LPIPS_REFERENCES`), so scoring several reconstructions of one image runs the network once
    per reconstruction instead of twice. The value is the same as one ``model(a, b)`` call: the
    same operations in the same order.
    """
    import torch

    from app.lpips_offline import load_lpips

    if convention not in ("standard", "paper"):
        raise ImageInputError(f"unknown LPIPS convention {convention!r}; use 'standard' or 'paper'")
    x, y = _pair_float(a, b)
    model = load_lpips(net)
    normalize = convention == "standard"
    with torch.no_grad():
        if not _splittable(model):
            value = model(_to_tensor(x), _to_tensor(y), normalize=normalize)
        else:
            key = (net, normalize, array_digest(a if isinstance(a, np.ndarray) else x))
            ref = _REF_FEATURES.get_or_make(
                key, lambda: _lpips_features(model, _to_tensor(x), normalize))
            value = _lpips_distance(model, ref, _lpips_features(model, _to_tensor(y), normalize))
    return float(value.reshape(-1)[0])


#: How many reference images' LPIPS features are kept (≈ 13 MB each at 768×512).
LPIPS_REFERENCES = 4
_REF_FEATURES = LRUCache(LPIPS_REFERENCES)


def forget_references() -> None:
    """Drop the kept LPIPS reference features and MS-SSIM reference pyramids (benchmarks that
    time a first request)."""
    _REF_FEATURES.clear()
    if "app.msssim" in sys.modules:
        sys.modules["app.msssim"].forget_references()


def _splittable(model: Any) -> bool:
    """True for the LPIPS v0.1 model with linear heads and a mean (the one this package loads)."""
    return (getattr(model, "version", None) == "0.1" and bool(getattr(model, "lpips", False))
            and not getattr(model, "spatial", True))


def _lpips_features(model: Any, t: torch.Tensor, normalize: bool) -> list:
    """One image's unit-normalised network features: the per-image half of ``LPIPS.forward``."""
    from lpips import normalize_tensor

    if normalize:
        t = 2 * t - 1
    outs = model.net.forward(model.scaling_layer(t))
    return [normalize_tensor(outs[k]) for k in range(model.L)]


def _lpips_distance(model: Any, f0: list, f1: list) -> torch.Tensor:
    """The pairwise half of ``LPIPS.forward``: linear heads on squared differences, mean, sum."""
    val: Any = 0
    for k in range(model.L):
        val += model.lins[k]((f0[k] - f1[k]) ** 2).mean([2, 3], keepdim=True)
    return val


def bpp(data: bytes | int, height: int, width: int) -> float:
    """Bits per pixel of an encoded file: 8·len(data) / (height·width) of the original image."""
    n = data if isinstance(data, int) else len(data)
    if height <= 0 or width <= 0:
        raise ImageInputError(f"invalid image size {height}x{width}")
    return 8.0 * n / (height * width)
