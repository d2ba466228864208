"""Measuring a codec on an image: the one path the UI, the evaluation and the benchmark share.

``measure(codec, image, caption, rate)`` encodes with real bytes, decodes them, and scores the
reconstruction; every number stays a number (`Measurement`). It is two steps that callers may also
use apart, e.g. to cache the coding and re-score under another LPIPS convention:

* :func:`code` — encode + decode, timed (`Coded`); with ``early=True`` a learned codec's
  reconstruction comes from the encoder's own ŷ (no entropy decoding), and :func:`confirm`
  entropy-decodes the file later and checks its symbols (the UI's first answer);
* :func:`score` — PSNR, the paper's float PSNR, MS-SSIM and LPIPS of a `Coded` (`Scores`).

Which metrics run, and with which functions, is a :class:`Metrics` value: the defaults are the
package's own (`app.metrics`); the UI passes the functions of its backend.

Conventions: PSNR is on the 8-bit reconstruction; ``psnr_float`` is on the decoder's unclamped
output (``Codec.decompress_float``) when the codec has one (``capabilities.float_decode``), else
on the 8-bit image (a classical codec's only output); MS-SSIM on images with a shorter side of at
most 160 px runs on copies resized to a 256-px shorter side (``ms_ssim_resized``); LPIPS-alex in
the standard convention ([-1, 1] inputs) and in the paper's ([0, 1] inputs fed as they are).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.codecs.protocol import Codec
from app.errors import TacoError, first_line
from app.images import ImageLike

LpipsFn = Callable[..., float]


@dataclass(frozen=True)
class Coded:
    """An image through one codec: the file, the 8-bit reconstruction, the rate used, timings."""

    codec: str
    data: bytes
    recon: np.ndarray
    rate: float | None
    encode_ms: float
    #: The decode's time; for an unconfirmed early coding, its synthesis step only.
    decode_ms: float
    #: False for an early coding whose file has not been entropy-decoded yet (see `confirm`).
    verified: bool = True

    @property
    def n_bytes(self) -> int:
        return len(self.data)

    @property
    def bpp(self) -> float:
        h, w = self.recon.shape[:2]
        return 8.0 * len(self.data) / (h * w)


@dataclass(frozen=True)
class Scores:
    """Quality of a reconstruction; None where a metric was not asked for or not available."""

    psnr: float
    psnr_float: float | None = None
    ms_ssim: float | None = None
    ms_ssim_resized: bool = False
    lpips: float | None = None
    lpips_paper: float | None = None
    #: Metrics that failed under ``Metrics.lenient`` ("LPIPS unavailable: …").
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Metrics:
    """Which metrics `score` computes, and the functions it computes them with."""

    psnr_float: bool = True
    ms_ssim: bool = True
    lpips: bool = True
    lpips_paper: bool = True
    psnr_fn: Callable[[np.ndarray, np.ndarray], float] | None = None
    ms_ssim_fn: Callable[[np.ndarray, np.ndarray], float] | None = None
    lpips_fn: LpipsFn | None = None
    #: A metric that raises (e.g. LPIPS weights missing) gives None and a note instead of an
    #: error (the UI); PSNR never fails.
    lenient: bool = False


#: Every metric, with the package's functions.
ALL = Metrics()
#: No metric beyond PSNR (timing runs).
TIMING = Metrics(psnr_float=False, ms_ssim=False, lpips=False, lpips_paper=False)


@dataclass(frozen=True)
class Measurement:
    """`Coded` and `Scores` of one codec on one image."""

    coded: Coded
    scores: Scores
    height: int
    width: int

    @property
    def codec(self) -> str:
        return self.coded.codec

    @property
    def n_bytes(self) -> int:
        return self.coded.n_bytes

    @property
    def bpp(self) -> float:
        return self.coded.bpp


def to_uint8(img: Image.Image | np.ndarray) -> np.ndarray:
    """A decoded image as a contiguous (H, W, 3) uint8 array (one-line `TacoError` otherwise)."""
    from app.metrics import to_uint8_rgb

    return np.ascontiguousarray(to_uint8_rgb(img, "decoded image"))


def code(codec: Codec, image: np.ndarray, caption: str = "", rate: float | None = None,
         target_bpp: float | None = None, *, early: bool = False) -> Coded:
    """Encode ``image`` (H, W, 3 uint8) with real bytes and decode them again, timed.

    ``rate`` is the codec's rate parameter (λ, or a Pillow quality); ``target_bpp`` (if given)
    searches it. A reconstruction of another size than the input raises `TacoError`.

    ``early``: where the codec offers it (``capabilities.early_reconstruction``, at a given rate),
    the reconstruction is synthesised from the encoder's ŷ —
    bit for bit what decoding the file here gives once its symbols check out — and the result is
    unconfirmed (``verified=False``) until :func:`confirm`. Elsewhere it is an ordinary `code`.
    """
    t0 = time.perf_counter()
    if early and target_bpp is None and codec.capabilities.early_reconstruction:
        enc = codec.encode(image, caption=caption, lmbda=rate, reconstruct=True)  # type: ignore[call-arg]
        if enc.recon is not None:
            return Coded(codec.name, bytes(enc.data), _same_size(codec, enc.recon, image),
                         enc.lmbda, enc.encode_ms, enc.recon_ms, verified=False)
    else:
        enc = codec.encode(image, caption=caption, lmbda=rate, target_bpp=target_bpp)
    t1 = time.perf_counter()
    recon = _same_size(codec, to_uint8(codec.decompress(enc.data)), image)
    t2 = time.perf_counter()
    return Coded(codec.name, bytes(enc.data), recon, enc.lmbda, (t1 - t0) * 1e3, (t2 - t1) * 1e3)


def confirm(codec: Codec, coded: Coded) -> Coded:
    """An early coding with its file entropy-decoded and its symbols checked (`BitstreamError`
    where they differ); ``decode_ms`` becomes synthesis + entropy decoding. Others unchanged."""
    import dataclasses

    if coded.verified:
        return coded
    t0 = time.perf_counter()
    codec.verify(coded.data)  # type: ignore[attr-defined]
    ms = (time.perf_counter() - t0) * 1e3
    return dataclasses.replace(coded, decode_ms=coded.decode_ms + ms, verified=True)


def _same_size(codec: Codec, recon: np.ndarray, image: np.ndarray) -> np.ndarray:
    if recon.shape != image.shape:
        raise TacoError(
            f"{codec.name} returned a {recon.shape[1]}x{recon.shape[0]} image for a "
            f"{image.shape[1]}x{image.shape[0]} input"
        )
    return recon


def score(image: np.ndarray, coded: Coded, codec: Codec | None = None,
          metrics: Metrics = ALL) -> Scores:
    """The metrics of ``metrics`` for ``coded`` against ``image``.

    ``codec`` is needed only for ``psnr_float`` of a codec with a float decoder (it decodes the
    file once more, to its unclamped output).
    """
    from app import metrics as m

    recon = coded.recon
    h, w = image.shape[:2]
    psnr = (metrics.psnr_fn or m.psnr)(image, recon)
    p_float = None
    if metrics.psnr_float:
        if codec is not None and codec.capabilities.float_decode:
            p_float = m.psnr_float(image, np.asarray(codec.decompress_float(coded.data),
                                                     dtype=np.float64))
        else:  # 8-bit output: the paper's x̂ is the 8-bit image
            p_float = m.psnr_float(image, recon)
    notes: list[str] = []

    def guarded(label: str, fn: Callable[[], float]) -> float | None:
        if not metrics.lenient:
            return fn()
        try:
            return fn()
        except (TacoError, ValueError, RuntimeError) as exc:
            notes.append(f"{label} unavailable: {first_line(exc)}")
            return None

    ms_fn = metrics.ms_ssim_fn or m.ms_ssim
    ms = guarded("MS-SSIM", lambda: ms_fn(image, recon)) if metrics.ms_ssim else None
    lpips_fn = metrics.lpips_fn or m.lpips
    lp = (guarded("LPIPS", lambda: lpips_fn(image, recon, convention="standard"))
          if metrics.lpips else None)
    lp_paper = (guarded("LPIPS", lambda: lpips_fn(image, recon, convention="paper"))
                if metrics.lpips_paper else None)
    return Scores(
        psnr=float(psnr),
        psnr_float=None if p_float is None else float(p_float),
        ms_ssim=None if ms is None else float(ms),
        ms_ssim_resized=bool(metrics.ms_ssim and m.ms_ssim_needs_resize(h, w)),
        lpips=None if lp is None else float(lp),
        lpips_paper=None if lp_paper is None else float(lp_paper),
        notes=tuple(notes),
    )


def measure(codec: Codec, image: ImageLike, caption: str = "", rate: float | None = None, *,
            target_bpp: float | None = None, metrics: Metrics = ALL) -> Measurement:
    """Encode, decode and score one codec on one image (see the module docstring)."""
    from app.images import to_rgb_array

    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 \
            and image.shape[2] == 3:
        arr = np.ascontiguousarray(image)
    else:
        arr = np.ascontiguousarray(to_rgb_array(image))
    coded = code(codec, arr, caption, rate, target_bpp)
    h, w = arr.shape[:2]
    return Measurement(coded, score(arr, coded, codec, metrics), h, w)
