"""One codec on one image: load a codec by name, encode + decode for real, score → a `Row`.

bpp comes from the byte count (8·bytes / (H·W) of the original image), quality from the decoded
pixels (`app.metrics`); the columns and their conventions are those of `app.eval.schema`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from app.codecs.protocol import Codec
from app.eval.schema import Row, format_rate, stored

#: What the evaluation measures: any codec of the project.
EvalCodec = Codec


def get_codec(name: str, device: str = "cpu") -> Codec:
    """A classical codec, or a learned one (``app.codecs.load_codec``) with its model on ``device``."""
    from app.codecs import load_codec
    from app.codecs.classical import get_classical_codec, is_classical

    if is_classical(name):
        return get_classical_codec(name)
    return load_codec(name, device=device)


def measure(codec: Codec, image: np.ndarray, caption: str, rate: float,
            lpips_fn: Callable[..., float] | None = None) -> Row:
    """Encode + decode one image at one rate; its row (``image`` left empty for the caller)."""
    return measure_decoded(codec, image, caption, rate, lpips_fn)[0]


def measure_decoded(codec: Codec, image: np.ndarray, caption: str, rate: float,
                    lpips_fn: Callable[..., float] | None = None) -> tuple[Row, np.ndarray]:
    """`measure`, and the decoded HxWx3 uint8 image it measured (through `app.measure`)."""
    from app.measure import Metrics
    from app.measure import measure as measure_codec

    m = measure_codec(codec, image, caption, rate, metrics=Metrics(lpips_fn=lpips_fn))
    s = m.scores
    return Row(
        image="",
        codec=codec.name,
        rate=float(format_rate(rate)),
        width=m.width,
        height=m.height,
        bytes=m.n_bytes,
        bpp=stored("bpp", m.bpp),
        psnr=stored("psnr", s.psnr),
        psnr_float=stored("psnr_float", s.psnr_float),
        ms_ssim=stored("ms_ssim", s.ms_ssim),
        ms_ssim_resized=s.ms_ssim_resized,
        lpips=stored("lpips", s.lpips),
        lpips_paper=stored("lpips_paper", s.lpips_paper),
        encode_ms=stored("encode_ms", m.coded.encode_ms),
        decode_ms=stored("decode_ms", m.coded.decode_ms),
    ), m.coded.recon
