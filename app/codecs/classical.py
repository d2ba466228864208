"""Classical codecs (JPEG, WebP, AVIF through Pillow) behind the `Codec` protocol.

Every codec here is a `app.codecs.protocol.Codec`:

* ``encode(...) -> Encoded`` / ``compress(image, caption="", lmbda=None, target_bpp=None) -> bytes`` — ``image`` is a PIL
  image (converted to RGB) or an HxWx3 ``uint8`` array; ``caption`` is ignored; ``lmbda`` is the
  **quality** 1–100 (integer; default `PillowCodec.default_quality` = 75).
* ``decompress(data) -> PIL.Image.Image`` in mode RGB. Bytes that are not a valid file of the
  codec's own format raise `BitstreamError`.
* ``name``, ``capabilities`` (not learned, caption ignored, rate = quality 1–100),
  ``rate_range = (1, 100)``, ``rate_ladder = None``, ``fingerprint() -> None``.

Encoder settings (fixed, so numbers are reproducible):

=====  ====================================================================================
JPEG   baseline, Huffman tables not optimised, chroma subsampling 4:2:0 (Pillow's defaults,
       stated explicitly). Quality 50 on Kodak-24 gives ≈ 0.906 bpp / 32.17 dB (see RESULTS).
WebP   lossy, ``method=4`` (Pillow's default speed/quality trade-off), 4:2:0 as WebP always is.
AVIF   Pillow's AVIF encoder (built in since Pillow 11.3; else the ``pillow_avif`` plugin),
       4:2:0, ``speed=6``.
=====  ====================================================================================

Target bit rate (``target_bpp``). Encoded size grows with quality, so the quality is found by
a search on *real* encodings (a first probe from the codec's typical rate curve, steps along that
curve moved onto the image, then interpolation on log bpp inside the bracket, with bisection as
its fallback; 2–4 encodes typically): the search brackets the target between the highest
quality whose bpp ≤ target and the next quality up, and returns whichever of the two is
**closer** to the target (a tie goes to the smaller file). Below the rate of quality 1 the
quality-1 file is returned; above quality 100, the quality-100 file. When ``target_bpp`` is
given it wins over ``lmbda``. `PillowCodec.compress_to_bpp` also returns the chosen quality.
"""

from __future__ import annotations

import functools
import io
import math
import time
import warnings
from collections.abc import Callable
from typing import ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.codecs.protocol import Capabilities, Encoded, RateControl
from app.errors import BitstreamError, ConfigError, ImageInputError, MissingModelError
from app.hashing import array_digest
from app.images import ImageLike
from app.lru import LRUCache

#: Names accepted by `get_classical_codec`.
CLASSICAL_CODECS: tuple[str, ...] = ("jpeg", "webp", "avif")


def as_pil_rgb(image: ImageLike) -> Image.Image:
    """The codec input as an RGB PIL image: a PIL image of any mode, an HxWx3 uint8 array, or a
    file (path or bytes) read as the learned codecs read it (`app.images.to_rgb_array`)."""
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ImageInputError("empty image")
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageInputError(f"expected an HxWx3 uint8 array, got {image.dtype} {image.shape}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ImageInputError("empty image")
        return Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    from app.images import to_rgb_array

    return Image.fromarray(to_rgb_array(image), mode="RGB")


class PillowCodec:
    """A lossy Pillow format as a `Codec`; subclasses set the format and encoder options."""

    name: ClassVar[str] = ""
    pil_format: ClassVar[str] = ""
    default_quality: ClassVar[int] = 75
    #: Highest quality; `rate_range` is (1, max_quality).
    max_quality: ClassVar[int] = 100
    #: Images whose search encodes `compress_to_bpp` keeps (a few tens of kB each at 768×512).
    KEPT_IMAGES: ClassVar[int] = 4

    def __init__(self) -> None:
        self._kept = LRUCache(self.KEPT_IMAGES)

    @property
    def description(self) -> str:
        return f"{self.pil_format} (Pillow, quality 1–{self.max_quality})"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            learned=False, rate=RateControl.quality(1, self.max_quality, self.default_quality)
        )

    @property
    def rate_range(self) -> tuple[float, float] | None:
        return (1.0, float(self.max_quality))

    @property
    def rate_ladder(self) -> list[float] | None:
        return None

    def fingerprint(self, lmbda: float | None = None) -> bytes | None:
        """Classical files carry no weights fingerprint."""
        return None

    def _save_options(self) -> dict[str, object]:
        return {}

    # -- rate control -------------------------------------------------------------------------

    def quality_from_lmbda(self, lmbda: float | None) -> int:
        """The integer quality for ``lmbda`` (None → default); outside 1–100 raises `ConfigError`."""
        if lmbda is None:
            return self.default_quality
        q = float(lmbda)
        if not (1.0 <= q <= self.max_quality):
            raise ConfigError(f"{self.name}: quality must be between 1 and {self.max_quality}, got {lmbda}")
        return int(round(q))

    def encode_quality(self, image: ImageLike, quality: int) -> bytes:
        """Encode at an integer quality 1–100."""
        pil = as_pil_rgb(image)
        buf = io.BytesIO()
        pil.save(buf, format=self.pil_format, quality=int(quality), **self._save_options())
        return buf.getvalue()

    #: The codec's typical rate curve, (quality, bpp): geometric means over the seven shipped
    #: photos of assets/ (300×451 to 600×512 px). The search's first probe is the quality this
    #: curve gives for the target; its next one-sided steps follow the curve's shape moved to pass
    #: through the last probe. It only decides which qualities are probed, never the answer
    #: (sizes grow with quality, so the final bracket is the one bisection finds). Over 18
    #: searches (3 photos × 6 targets from 0.2 to 1 bpp) it took JPEG 81 → 63 encodes, WebP
    #: 78 → 67, AVIF 75 → 63 against constant-slope steps from quality 50, with the same
    #: qualities found. A subclass without its own curve gets a generic straight one.
    typical_rate: ClassVar[tuple[tuple[int, float], ...]] = ((1, 0.07), (100, 3.5))

    def _curve_quality(self, log_bpp: float) -> float:
        """The quality at which `typical_rate` reaches ``exp(log_bpp)`` (log-linear, clamped)."""
        qs, rates = zip(*self.typical_rate, strict=True)
        return float(np.interp(log_bpp, np.log(rates), qs))

    def _curve_log_bpp(self, q: float) -> float:
        """log bpp of `typical_rate` at quality ``q`` (log-linear in between, flat outside)."""
        qs, rates = zip(*self.typical_rate, strict=True)
        return float(np.interp(q, qs, np.log(rates)))

    def _bracket(self, rate: Callable[[int], float], target_bpp: float) -> tuple[int, int]:
        """``(lo, hi)``, ``hi = lo + 1``: the highest quality with ``rate <= target_bpp`` (1 if
        none is known) and the next one up (``max_quality`` if none is known).

        Every probe lies strictly inside the current bracket, so it shrinks at each encode, and
        sizes grow with quality, so the final bracket is the one bisection finds whatever the
        probes. Probes: the `typical_rate` quality for the target; while only one side of the
        target is known, the quality where that curve, moved to pass through the last probe,
        reaches the target (at least one step on); then interpolation on log bpp inside the
        bracket, with a plain halving after any step that kept more than half of it (2–4 encodes
        typically, about as many as bisection at worst). The caller encodes the range's ends
        when they matter.
        """
        goal = math.log(target_bpp)
        lo, hi = 1, self.max_quality
        below = above = halve = False
        q = int(round(self._curve_quality(goal)))
        q = min(max(q, lo + 1), hi - 1)
        while True:
            width = hi - lo
            r = math.log(max(rate(q), 1e-9))
            if rate(q) <= target_bpp:
                lo, below = q, True
            else:
                hi, above = q, True
            if hi - lo <= 1:
                return lo, hi
            if not (below and above):
                # this image's curve: the typical one shifted by the probe's offset
                step = self._curve_quality(goal - (r - self._curve_log_bpp(q))) - q
                q = int(round(q + math.copysign(max(1.0, abs(step)), goal - r)))
            elif halve:
                q = (lo + hi) // 2
            else:
                r_lo, r_hi = math.log(max(rate(lo), 1e-9)), math.log(rate(hi))
                q = int(round(lo + (goal - r_lo) * (hi - lo) / (r_hi - r_lo))) \
                    if r_hi > r_lo else lo + 1
            halve = below and above and not halve and (hi - lo) * 2 > width
            q = min(max(q, lo + 1), hi - 1)

    def compress_to_bpp(self, image: ImageLike, target_bpp: float) -> tuple[bytes, int]:
        """Encode at the quality whose real bpp is closest to ``target_bpp`` (see module doc).

        Returns ``(data, quality)``. The encodes of the last few images are kept
        (`KEPT_IMAGES`, keyed on pixel content): a later search on the same image — the UI
        searches for ELIC's bpp while the user writes a caption, then for TACO's, which is
        close — probes the same qualities a first search would and encodes only those not
        kept (about one instead of three or four), so its answer never depends on what ran
        before.
        """
        if not (target_bpp > 0 and np.isfinite(target_bpp)):
            raise ConfigError(f"{self.name}: target bpp must be a positive number, got {target_bpp}")
        pil = as_pil_rgb(image)
        pixels = pil.width * pil.height
        key = array_digest(np.asarray(pil))
        cache: dict[int, bytes] | None = self._kept.get(key)
        if cache is None:
            cache = {}
            self._kept.put(key, cache)

        def rate(q: int) -> float:
            if q not in cache:
                cache[q] = self.encode_quality(pil, q)
            return 8.0 * len(cache[q]) / pixels

        lo, hi = self._bracket(rate, target_bpp)
        if rate(lo) >= target_bpp and lo == 1:
            return cache[lo], lo
        if rate(hi) <= target_bpp:
            return cache[hi], hi
        best = lo if target_bpp - rate(lo) <= rate(hi) - target_bpp else hi
        return cache[best], best

    def forget_images(self) -> None:
        """Drop the kept encodes (benchmarks that time a first search)."""
        self._kept.clear()

    # -- Codec protocol -----------------------------------------------------------------------

    def compress(
        self,
        image: ImageLike,
        caption: str = "",
        lmbda: float | None = None,
        target_bpp: float | None = None,
    ) -> bytes:
        """Encode ``image``; ``lmbda`` is the quality 1–100, ``target_bpp`` (if given) wins.

        ``caption`` is accepted for the protocol and ignored.
        """
        return self.encode(image, caption, lmbda, target_bpp).data

    def encode(
        self,
        image: ImageLike,
        caption: str = "",
        lmbda: float | None = None,
        target_bpp: float | None = None,
    ) -> Encoded:
        """`compress`, with the quality used and the time it took."""
        del caption
        t0 = time.perf_counter()
        pil = as_pil_rgb(image)
        if target_bpp is not None:
            data, quality = self.compress_to_bpp(pil, target_bpp)
        else:
            quality = self.quality_from_lmbda(lmbda)
            data = self.encode_quality(pil, quality)
        return Encoded(data, pil.height, pil.width, float(quality), (time.perf_counter() - t0) * 1e3)

    def decompress(self, data: bytes) -> Image.Image:
        """Decode bytes of this codec's format to an RGB image; anything else raises `BitstreamError`."""
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
            raise BitstreamError(f"{self.name}: empty or non-bytes input")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(bytes(data)), formats=[self.pil_format])
                img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BitstreamError(f"{self.name}: image too large to decode safely") from exc
        except UnidentifiedImageError as exc:
            raise BitstreamError(f"{self.name}: not a readable {self.pil_format} file") from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BitstreamError(f"{self.name}: corrupted {self.pil_format} data ({exc})") from exc
        return img if img.mode == "RGB" else img.convert("RGB")

    def decompress_float(self, data: bytes) -> np.ndarray:
        """The 8-bit decoded image as float32 in [0, 1] (a classical decoder has no other output)."""
        return np.asarray(self.decompress(data), dtype=np.float32) / 255.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class JpegCodec(PillowCodec):
    """Baseline JPEG, 4:2:0, non-optimised Huffman tables (Pillow defaults)."""

    name = "jpeg"
    pil_format = "JPEG"
    typical_rate = ((1, 0.183), (5, 0.223), (10, 0.307), (20, 0.448), (30, 0.576), (40, 0.688),
                    (50, 0.779), (60, 0.929), (70, 1.11), (80, 1.37), (90, 2.039), (100, 5.659))

    def _save_options(self) -> dict[str, object]:
        return {"subsampling": "4:2:0", "optimize": False, "progressive": False}


class WebpCodec(PillowCodec):
    """Lossy WebP, ``method=4``."""

    name = "webp"
    pil_format = "WEBP"
    typical_rate = ((1, 0.153), (5, 0.205), (10, 0.252), (20, 0.336), (30, 0.419), (40, 0.508),
                    (50, 0.594), (60, 0.676), (70, 0.772), (80, 1.01), (90, 1.659), (100, 3.28))

    def _save_options(self) -> dict[str, object]:
        return {"lossless": False, "method": 4}


def _ensure_avif() -> None:
    from PIL import features

    if features.check("avif"):
        return
    try:
        import pillow_avif  # noqa: F401 - registers the AVIF plugin with Pillow
    except ImportError as exc:
        raise MissingModelError(
            "AVIF needs Pillow ≥ 11.3 built with libavif or the pillow-avif-plugin package"
        ) from exc


class AvifCodec(PillowCodec):
    """AVIF (AV1 intra), 4:2:0, ``speed=6``."""

    name = "avif"
    pil_format = "AVIF"
    typical_rate = ((1, 0.078), (5, 0.084), (10, 0.107), (20, 0.154), (30, 0.225), (40, 0.338),
                    (50, 0.53), (60, 0.764), (70, 1.041), (80, 1.381), (90, 1.949), (100, 5.173))

    def __init__(self) -> None:
        _ensure_avif()
        super().__init__()

    def _save_options(self) -> dict[str, object]:
        return {"subsampling": "4:2:0", "speed": 6}


_CLASSES: dict[str, type[PillowCodec]] = {"jpeg": JpegCodec, "webp": WebpCodec, "avif": AvifCodec}


def is_classical(name: str) -> bool:
    """True for the names `get_classical_codec` serves."""
    return name.lower().strip() in _CLASSES


def get_classical_codec(name: str) -> PillowCodec:
    """The (shared, stateless) codec instance for ``"jpeg"``, ``"webp"`` or ``"avif"``."""
    key = name.lower().strip()
    if key not in _CLASSES:
        raise ConfigError(f"unknown classical codec {name!r}; available: {', '.join(CLASSICAL_CODECS)}")
    return _instance(key)


@functools.cache
def _instance(key: str) -> PillowCodec:
    return _CLASSES[key]()
