"""One codec on the request's image, for the UI: real bytes, reconstruction, metrics (`CodecRun`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from app.ui.backend import Backend
from app.ui.cache import RESULTS_CACHE, image_digest

if TYPE_CHECKING:  # pragma: no cover
    from app.codecs.protocol import Codec
    from app.measure import Coded, Scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodecRun:
    """One codec applied to the image: real bytes, reconstruction, timings and metrics."""

    row_id: str  # "taco", "elic", "elic@bpp", "jpeg@bpp", "caption:empty", …
    label: str  # shown in the table
    codec_name: str
    data: bytes
    recon: np.ndarray
    encode_ms: float
    decode_ms: float | None  # None until an early coding's file is confirmed
    lmbda: float | None
    setting: str
    psnr: float
    ms_ssim: float | None
    lpips: float | None
    lpips_convention: str
    caption: str = ""
    learned: bool = True

    @property
    def n_bytes(self) -> int:
        return len(self.data)

    @property
    def bpp(self) -> float:
        h, w = self.recon.shape[:2]
        return 8.0 * len(self.data) / (h * w)


def to_uint8(img: Any) -> np.ndarray:
    if isinstance(img, Image.Image):
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def coded_key(codec: Codec, digest: str, caption: str, lmbda: float | None,
              target_bpp: float | None) -> tuple:
    """The results-cache key of one coding of an image."""
    return ("coded", digest, codec.name, id(codec), caption, lmbda, target_bpp)


def is_coded(codec: Codec, digest: str, caption: str = "", lmbda: float | None = None,
             target_bpp: float | None = None) -> bool:
    """Whether the results cache holds this coding (then only its file check may be left)."""
    return coded_key(codec, digest, caption, lmbda, target_bpp) in RESULTS_CACHE


def encode_decode(
    codec: Codec,
    image: np.ndarray,
    digest: str,
    *,
    caption: str = "",
    lmbda: float | None = None,
    target_bpp: float | None = None,
    use_cache: bool = True,
    early: bool = False,
) -> Coded:
    """`app.measure.code` (real encode + decode), cached on image content and settings.

    ``early`` (the page's first answer) takes a learned codec's reconstruction from its encoder
    (`app.measure.code`); a later call without it confirms that coding from the cache by
    entropy-decoding its file (`app.measure.confirm`) instead of coding the image again.
    """
    from app.measure import code, confirm

    if not use_cache:
        return code(codec, image, caption, lmbda, target_bpp, early=early)
    key = coded_key(codec, digest, caption, lmbda, target_bpp)
    hit = RESULTS_CACHE.get_or_make(
        key, lambda: code(codec, image, caption, lmbda, target_bpp, early=early))
    if not early and not hit.verified:
        # single flight too: two requests checking one file entropy-decode it once
        early_hit = hit
        hit = RESULTS_CACHE.get_or_make(("confirmed", *key), lambda: confirm(codec, early_hit))
        RESULTS_CACHE.put(key, hit)
    return hit


def quality(
    backend: Backend,
    image: np.ndarray,
    coded: Coded,
    digest: str,
    convention: str,
    *,
    with_ms_ssim: bool = True,
    use_cache: bool = True,
) -> Scores:
    """`app.measure.score` with the backend's metrics (a failing one becomes a note), cached.

    PSNR + LPIPS and MS-SSIM are cached apart: the page's first answer skips MS-SSIM (about
    80 ms a row at 768×512) and its second step adds it without computing LPIPS again.
    """
    import dataclasses

    from app.measure import Metrics, score

    rec_digest = image_digest(coded.recon)
    key = ("quality", digest, rec_digest, convention)

    def make() -> Scores:
        metrics = Metrics(
            psnr_float=False,
            ms_ssim=False,
            lpips=convention == "standard",
            lpips_paper=convention == "paper",
            psnr_fn=backend.psnr,
            lpips_fn=backend.lpips,
            lenient=True,
        )
        return score(image, coded, None, metrics)

    out = RESULTS_CACHE.get_or_make(key, make) if use_cache else make()
    if not with_ms_ssim:
        return out

    def make_ms_ssim() -> Scores:
        return score(image, coded, None, Metrics(psnr_float=False, ms_ssim=True, lpips=False,
                                                 lpips_paper=False, psnr_fn=backend.psnr,
                                                 ms_ssim_fn=backend.ms_ssim, lenient=True))

    ms_key = ("ms_ssim", digest, rec_digest)
    ms = RESULTS_CACHE.get_or_make(ms_key, make_ms_ssim) if use_cache else make_ms_ssim()
    return dataclasses.replace(out, ms_ssim=ms.ms_ssim, ms_ssim_resized=ms.ms_ssim_resized,
                               notes=tuple(dict.fromkeys(out.notes + ms.notes)))


def setting_text(lmbda: float | None, target_bpp: float | None, learned: bool) -> str:
    if not learned:
        return "quality search" if target_bpp else "default quality"
    lam = f"λ {lmbda:.3g}" if lmbda is not None else "default λ"
    return f"{lam}, search" if target_bpp is not None else lam


def run_codec(
    backend: Backend,
    codec: Codec,
    image: np.ndarray,
    digest: str,
    *,
    row_id: str,
    label: str,
    caption: str = "",
    lmbda: float | None = None,
    target_bpp: float | None = None,
    learned: bool = True,
    convention: str = "standard",
    with_ms_ssim: bool = True,
    use_cache: bool = True,
    notes: list[str] | None = None,
    early: bool = False,
) -> CodecRun:
    coded = encode_decode(
        codec,
        image,
        digest,
        caption=caption if learned else "",
        lmbda=lmbda,
        target_bpp=target_bpp,
        use_cache=use_cache,
        early=early,
    )
    # a learned row shows the λ it used (found by a bpp search); a classical row the request
    lam_used = coded.rate if learned else lmbda
    q = quality(
        backend,
        image,
        coded,
        digest,
        convention,
        with_ms_ssim=with_ms_ssim,
        use_cache=use_cache,
    )
    if notes is not None:
        for n in q.notes:
            if n not in notes:
                notes.append(n)
    return CodecRun(
        row_id=row_id,
        label=label,
        codec_name=str(codec.name),
        data=coded.data,
        recon=coded.recon,
        encode_ms=coded.encode_ms,
        decode_ms=coded.decode_ms if coded.verified else None,
        lmbda=lam_used,
        setting=setting_text(lam_used, target_bpp, learned),
        psnr=q.psnr,
        ms_ssim=q.ms_ssim,
        lpips=q.lpips if convention == "standard" else q.lpips_paper,
        lpips_convention=convention,
        caption=caption,
        learned=learned,
    )
