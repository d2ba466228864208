"""One codec on one image: load a codec by name, encode + decode for real, score → a `Row`.

bpp comes from the byte count (8·bytes / (H·W) of the original image), quality from the decoded
pixels (`app.metrics`); the columns and their conventions are those of `app.eval.schema`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from app.errors import MissingModelError, TacoError
from app.eval.schema import Row, format_rate, stored


class EvalCodec(Protocol):
    """The part of the `Codec` protocol the evaluation uses."""

    @property
    def name(self) -> str: ...

    @property
    def rate_range(self) -> tuple[float, float] | None: ...

    @property
    def rate_ladder(self) -> list[float] | None: ...

    def compress(self, image: Any, caption: str = "", lmbda: float | None = None,
                 target_bpp: float | None = None) -> bytes: ...

    def decompress(self, data: bytes) -> Any: ...


def get_codec(name: str, device: str = "cpu") -> EvalCodec:
    """A classical codec, or a learned one through ``app.codecs.load_codec`` (imported lazily),
    its model on ``device``."""
    from app.codecs.classical import get_classical_codec, is_classical

    if is_classical(name):
        return get_classical_codec(name)
    try:
        from app.codecs import load_codec
    except ImportError as exc:
        raise MissingModelError(f"learned codec {name!r} needs app.codecs, which is not available") from exc
    return load_codec(name, device=device)


def measure(codec: EvalCodec, image: np.ndarray, caption: str, rate: float,
            lpips_fn: Callable[..., float] | None = None) -> Row:
    """Encode + decode one image at one rate; its row (``image`` left empty for the caller)."""
    return measure_decoded(codec, image, caption, rate, lpips_fn)[0]


def measure_decoded(codec: EvalCodec, image: np.ndarray, caption: str, rate: float,
                    lpips_fn: Callable[..., float] | None = None) -> tuple[Row, np.ndarray]:
    """`measure`, and the decoded HxWx3 uint8 image it measured."""
    from app.codecs.classical import PillowCodec
    from app.metrics import lpips, ms_ssim, ms_ssim_needs_resize, psnr, psnr_float, to_uint8_rgb

    lpips_fn = lpips_fn or lpips
    h, w = image.shape[:2]
    t0 = time.perf_counter()
    data = codec.compress(image, caption=caption, lmbda=rate)
    t1 = time.perf_counter()
    decoded = codec.decompress(data)
    t2 = time.perf_counter()
    out = to_uint8_rgb(decoded, "decoded image")
    if out.shape != image.shape:
        raise TacoError(f"{codec.name}: decoded size {out.shape[:2]} differs from input {(h, w)}")

    p_float: float | None = None
    hook = getattr(codec, "decompress_float", None)
    if callable(hook):
        p_float = psnr_float(image, np.asarray(hook(data), dtype=np.float64))
    elif isinstance(codec, PillowCodec):  # 8-bit output: the paper's x̂ is the 8-bit image
        p_float = psnr_float(image, out)

    return Row(
        image="",
        codec=codec.name,
        rate=float(format_rate(rate)),
        width=w,
        height=h,
        bytes=len(data),
        bpp=stored("bpp", 8.0 * len(data) / (h * w)),
        psnr=stored("psnr", psnr(image, out)),
        psnr_float=stored("psnr_float", p_float),
        ms_ssim=stored("ms_ssim", ms_ssim(image, out)),
        ms_ssim_resized=bool(ms_ssim_needs_resize(h, w)),
        lpips=stored("lpips", lpips_fn(image, out, convention="standard")),
        lpips_paper=stored("lpips_paper", lpips_fn(image, out, convention="paper")),
        encode_ms=stored("encode_ms", (t1 - t0) * 1e3),
        decode_ms=stored("decode_ms", (t2 - t1) * 1e3),
    ), out
