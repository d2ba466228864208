"""Everything the demo does, as typed functions with no Gradio in them.

`app.ui.layout` only wires these to components. Each function takes plain values (a path or an
array for the image, strings, numbers) and returns plain values (arrays, DataFrames, Markdown
strings, plotly figures through `app.ui.plots`), so the whole demo is testable without a browser.

The heavy lifting goes through a :class:`Backend` (codecs, metrics, text encoder, captioner).
The default backend imports the package modules lazily (`app.codecs`, `app.metrics`, …), so
building the UI never imports torch; tests inject a fake backend or the tiny random models.

Errors: anything a user can cause ends as a :class:`~app.errors.TacoError` with a one-line
message. Non-fatal problems (a codec or a metric that is not available) become notes in the
result, shown in the status line, never tracebacks.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from PIL import Image

from app.errors import BitstreamError, ImageInputError, MissingModelError, TacoError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from app.bitstream import Header
    from app.codecs.protocol import Codec

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = ROOT / "assets"
RESULTS_DIR = ROOT / "docs" / "results"

#: Longest image side the demo works on (CPU budget: 2 cores on a free Space).
MAX_SIDE = int(os.environ.get("TACO_UI_MAX_SIDE", "768"))
#: Default slider position (0 = lowest bitrate, 100 = highest).
DEFAULT_RATE = 50.0
DEFAULT_TARGET_BPP = 0.3
DEFAULT_SECOND_CAPTION = "A crowded city street at night with neon signs and cars."
TEXT_LEN = 38
CLASSICAL_CODECS: tuple[str, ...] = ("jpeg", "webp", "avif")
LpipsConvention = Literal["standard", "paper"]
LPIPS_LABELS: dict[str, str] = {
    "standard": "standard: inputs scaled to [-1, 1]",
    "paper": "paper convention: [0, 1] inputs, as TACO's scripts",
}

ProgressFn = Callable[[float, str], None]


def _no_progress(_fraction: float, _desc: str) -> None:
    return None


# =============================================================================================
# Backend: the package functions the UI needs (injectable for tests)
# =============================================================================================


class Backend(Protocol):
    """The package API the UI builds on (see docs/ARCHITECTURE.md)."""

    def load_codec(self, name: str, allow_random: bool = False) -> Codec: ...
    def classical_codec(self, name: str) -> Codec: ...
    def prepare_image(self, obj: Any, max_side: int) -> tuple[np.ndarray, list[str]]: ...
    def psnr(self, a: np.ndarray, b: np.ndarray) -> float: ...
    def ms_ssim(self, a: np.ndarray, b: np.ndarray) -> float: ...
    def lpips(self, a: np.ndarray, b: np.ndarray, convention: str) -> float: ...
    def token_info(self, kind: str, caption: str) -> Any: ...
    def clean_caption(self, caption: str) -> str: ...
    def captioner_available(self) -> tuple[bool, str]: ...
    def caption_image(self, image: Image.Image) -> str: ...
    def decompress(self, data: bytes) -> Image.Image: ...
    def decompress_untrusted(self, data: bytes) -> Image.Image: ...
    def read_header(self, data: bytes) -> Header: ...
    def available_model_sets(self) -> dict[str, dict[str, str]]: ...


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingModelError(f"{module} is not available: {exc}".splitlines()[0]) from None


class PackageBackend:
    """The real package (`app.codecs`, `app.metrics`, `app.text`, …), imported on first use."""

    def load_codec(self, name: str, allow_random: bool = False) -> Codec:
        return _import("app.codecs").load_codec(name, allow_random=allow_random)

    def classical_codec(self, name: str) -> Codec:
        return _import("app.codecs.classical").get_classical_codec(name)

    def prepare_image(self, obj: Any, max_side: int) -> tuple[np.ndarray, list[str]]:
        return _import("app.images").prepare_image(obj, max_side=max_side)

    def psnr(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(_import("app.metrics").psnr(a, b))

    def ms_ssim(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(_import("app.metrics").ms_ssim(a, b))

    def lpips(self, a: np.ndarray, b: np.ndarray, convention: str) -> float:
        return float(_import("app.metrics").lpips(a, b, convention=convention))

    def token_info(self, kind: str, caption: str) -> Any:
        return _import("app.text").get_text_encoder(kind).tokenize_info(caption)

    def clean_caption(self, caption: str) -> str:
        return _import("app.text").clean_caption(caption)

    def captioner_available(self) -> tuple[bool, str]:
        try:
            mod = _import("app.captioner")
        except TacoError as exc:
            return False, str(exc)
        return mod.captioner_available()

    def caption_image(self, image: Image.Image) -> str:
        return _import("app.captioner").caption_image(image)

    def decompress(self, data: bytes) -> Image.Image:
        return _import("app.codecs").decompress(data)

    def decompress_untrusted(self, data: bytes) -> Image.Image:
        """An uploaded file: decoded in a worker process (`app.sandbox`)."""
        return _import("app.sandbox").decompress_untrusted(data)

    def read_header(self, data: bytes) -> Header:
        return _import("app.codecs").read_header(data)

    def available_model_sets(self) -> dict[str, dict[str, str]]:
        return _import("app.codecs").available_model_sets()


_DEFAULT_BACKEND: Backend | None = None


def default_backend() -> Backend:
    global _DEFAULT_BACKEND
    if _DEFAULT_BACKEND is None:
        _DEFAULT_BACKEND = PackageBackend()
    return _DEFAULT_BACKEND


# =============================================================================================
# Model sets
# =============================================================================================


@dataclass(frozen=True)
class ModelSet:
    """A TACO model and the ELIC baseline it is compared with."""

    label: str
    taco: str
    elic: str | None
    allow_random: bool = False


TINY_SET = ModelSet("Tiny random models (tests)", "taco-tiny", "elic-tiny", allow_random=True)
EMBEDDED_FALLBACK = ModelSet("Embedded (offline)", "taco", "elic")


def resolve_model_sets(
    backend: Backend | None = None, env: Mapping[str, str] | None = None
) -> dict[str, ModelSet]:
    """The model sets the UI offers, in display order.

    ``TACO_MODEL_SET=tiny`` gives only the tiny random set (tests, CI). Otherwise the sets whose
    weights exist (`app.codecs.available_model_sets`); when none exist, the embedded set anyway, so
    that the first request explains which weights are missing.
    """
    env = os.environ if env is None else env
    choice = env.get("TACO_MODEL_SET", "").strip().lower()
    if choice == "tiny":
        return {TINY_SET.label: TINY_SET}
    backend = backend or default_backend()
    try:
        found = backend.available_model_sets()
    except TacoError as exc:
        log.warning("no model sets: %s", exc)
        found = {}
    sets = {
        label: ModelSet(label, spec["taco"], spec.get("elic"))
        for label, spec in found.items()
        if spec.get("taco")
    }
    if not sets:
        sets = {EMBEDDED_FALLBACK.label: EMBEDDED_FALLBACK}
    if choice and choice != "tiny":
        picked = {k: v for k, v in sets.items() if choice in k.lower() or choice == v.taco}
        sets = picked or sets
    return sets


def missing_weights_notice(
    backend: Backend | None = None, env: Mapping[str, str] | None = None
) -> str:
    """A banner for a fresh checkout without trained weights ("" when weights exist)."""
    env = os.environ if env is None else env
    if env.get("TACO_MODEL_SET", "").strip().lower() == "tiny":
        return ""
    backend = backend or default_backend()
    try:
        found = backend.available_model_sets()
    except TacoError:
        found = {}
    if found:
        return ""
    return (
        "**No model weights installed yet.** The embedded TACO/ELIC weights "
        "(`checkpoints/taco-small.safetensors`, `checkpoints/elic-small.safetensors`) are "
        "missing: train them with `python -m app train`, put the official checkpoints in "
        "`checkpoints/official/`, or start with `TACO_MODEL_SET=tiny` (tiny random models) to "
        "try the interface. Requests will explain what is missing."
    )


def pick_model_set(
    model_set: ModelSet | str | None, sets: Mapping[str, ModelSet] | None = None
) -> ModelSet:
    """Accept a ModelSet, a label from the UI, a TACO codec name, or None (first available)."""
    if isinstance(model_set, ModelSet):
        return model_set
    sets = dict(sets) if sets is not None else resolve_model_sets()
    if not model_set:
        return next(iter(sets.values()))
    if model_set in sets:
        return sets[model_set]
    for ms in sets.values():
        if model_set in (ms.taco, ms.label.lower()):
            return ms
    raise TacoError(f"unknown model set {model_set!r}; choose from {', '.join(sets)}")


# =============================================================================================
# Rate control: one slider position (0-100) for continuous λ and for λ ladders
# =============================================================================================


@dataclass(frozen=True)
class RateSpec:
    """How a codec's rate is controlled."""

    kind: Literal["continuous", "ladder", "none"]
    lo: float | None = None
    hi: float | None = None
    ladder: tuple[float, ...] = ()

    @classmethod
    def of(cls, codec: Codec) -> RateSpec:
        rate = codec.capabilities.rate
        if rate.kind == "ladder":
            return cls("ladder", ladder=rate.ladder)
        return cls("continuous", rate.lo, rate.hi)

    @property
    def step(self) -> float:
        """Slider step: 1 for a continuous range, one notch per rung for a ladder."""
        if self.kind == "ladder" and len(self.ladder) > 1:
            return 100.0 / (len(self.ladder) - 1)
        return 1.0

    def lmbda_at(self, position: float) -> float | None:
        """λ for a slider position: log-uniform over a range; the nearest rung of a ladder."""
        p = min(max(float(position), 0.0), 100.0) / 100.0
        if self.kind == "continuous":
            assert self.lo is not None and self.hi is not None
            lam = math.exp(math.log(self.lo) + p * (math.log(self.hi) - math.log(self.lo)))
            return float(f"{lam:.3g}")
        if self.kind == "ladder":
            return self.ladder[round(p * (len(self.ladder) - 1))]
        return None

    def fit(self, lmbda: float | None) -> float | None:
        """The λ this codec offers closest to ``lmbda`` (clamped; nearest rung in log)."""
        if lmbda is None or self.kind == "none":
            return None
        if self.kind == "continuous":
            assert self.lo is not None and self.hi is not None
            return min(max(float(lmbda), self.lo), self.hi)
        return min(self.ladder, key=lambda v: abs(math.log(v / lmbda)))

    def describe(self, position: float) -> str:
        lam = self.lmbda_at(position)
        if self.kind == "continuous":
            return (
                f"λ = {lam:.3g} (variable-rate model, λ from {self.lo:.3g} to {self.hi:.3g}; "
                "larger λ = more bits, better quality)"
            )
        if self.kind == "ladder":
            rungs = ", ".join(f"{v:g}" for v in self.ladder)
            return f"λ = {lam:g} (fixed-rate checkpoints: {rungs})"
        return "this model has a single rate"


def rate_label(
    model_set: ModelSet | str | None, position: float, backend: Backend | None = None
) -> str:
    """The Markdown line under the bitrate slider (loads the TACO model once, then cached)."""
    backend = backend or default_backend()
    try:
        ms = pick_model_set(model_set)
        codec = backend.load_codec(ms.taco, allow_random=ms.allow_random)
    except TacoError as exc:
        return f"Bitrate position {position:.0f}/100 · {exc}"
    return RateSpec.of(codec).describe(position)


def slider_step(model_set: ModelSet | str | None, backend: Backend | None = None) -> float:
    backend = backend or default_backend()
    try:
        ms = pick_model_set(model_set)
        return RateSpec.of(backend.load_codec(ms.taco, allow_random=ms.allow_random)).step
    except TacoError:
        return 1.0


# =============================================================================================
# A small thread-safe LRU for encode results (keyed on image content + settings)
# =============================================================================================


class LRUCache:
    """Least-recently-used cache with a bounded number of entries."""

    def __init__(self, max_entries: int = 48) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)


RESULTS_CACHE = LRUCache(int(os.environ.get("TACO_UI_CACHE_ENTRIES", "48")))


def image_digest(arr: np.ndarray) -> str:
    h = hashlib.sha1(str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


# =============================================================================================
# Encoding one codec and measuring it
# =============================================================================================


@dataclass(frozen=True)
class CodecRun:
    """One codec applied to the image: real bytes, reconstruction, timings and metrics."""

    row_id: str  # "taco", "elic", "elic@bpp", "jpeg@bpp", "caption:empty", …
    label: str  # shown in the table
    codec_name: str
    data: bytes
    recon: np.ndarray
    encode_ms: float
    decode_ms: float
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


@dataclass
class _Coded:
    data: bytes
    recon: np.ndarray
    encode_ms: float
    decode_ms: float
    lmbda: float | None


def _to_uint8(img: Any) -> np.ndarray:
    if isinstance(img, Image.Image):
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _encode_decode(
    backend: Backend,
    codec: Any,
    image: np.ndarray,
    digest: str,
    *,
    caption: str = "",
    lmbda: float | None = None,
    target_bpp: float | None = None,
    learned: bool = True,
    use_cache: bool = True,
) -> _Coded:
    """Compress + decompress one image (cached on content and settings)."""
    key = ("coded", digest, codec.name, id(codec), caption, lmbda, target_bpp)
    if use_cache:
        hit = RESULTS_CACHE.get(key)
        if hit is not None:
            return hit
    t0 = time.perf_counter()
    enc = codec.encode(image, caption if learned else "", lmbda, target_bpp)
    data = enc.data
    # a learned row shows the λ it used (found by a bpp search); a classical row the request
    lam_used = enc.lmbda if learned else lmbda
    t1 = time.perf_counter()
    recon = _to_uint8(codec.decompress(data))
    t2 = time.perf_counter()
    if recon.shape != image.shape:
        raise TacoError(
            f"{codec.name} returned a {recon.shape[1]}x{recon.shape[0]} image for a "
            f"{image.shape[1]}x{image.shape[0]} input"
        )
    out = _Coded(bytes(data), recon, (t1 - t0) * 1e3, (t2 - t1) * 1e3, lam_used)
    if use_cache:
        RESULTS_CACHE.put(key, out)
    return out


@dataclass(frozen=True)
class _Quality:
    psnr: float
    ms_ssim: float | None
    lpips: float | None
    notes: tuple[str, ...] = ()


def _quality(
    backend: Backend,
    image: np.ndarray,
    recon: np.ndarray,
    digest: str,
    convention: str,
    *,
    with_ms_ssim: bool = True,
    use_cache: bool = True,
) -> _Quality:
    key = ("quality", digest, image_digest(recon), convention, with_ms_ssim)
    if use_cache:
        hit = RESULTS_CACHE.get(key)
        if hit is not None:
            return hit
    notes: list[str] = []
    p = backend.psnr(image, recon)
    ms: float | None = None
    if with_ms_ssim:
        try:
            ms = backend.ms_ssim(image, recon)
        except (TacoError, ValueError, RuntimeError) as exc:
            notes.append(f"MS-SSIM unavailable: {_one_line(exc)}")
    lp: float | None = None
    try:
        lp = backend.lpips(image, recon, convention)
    except (TacoError, ValueError, RuntimeError) as exc:
        notes.append(f"LPIPS unavailable: {_one_line(exc)}")
    out = _Quality(float(p), ms, lp, tuple(notes))
    if use_cache:
        RESULTS_CACHE.put(key, out)
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _setting(lmbda: float | None, target_bpp: float | None, learned: bool) -> str:
    if not learned:
        return "quality search" if target_bpp else "default quality"
    lam = f"λ {lmbda:.3g}" if lmbda is not None else "default λ"
    return f"{lam}, search" if target_bpp is not None else lam


def _run_codec(
    backend: Backend,
    codec: Any,
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
) -> CodecRun:
    coded = _encode_decode(
        backend,
        codec,
        image,
        digest,
        caption=caption,
        lmbda=lmbda,
        target_bpp=target_bpp,
        learned=learned,
        use_cache=use_cache,
    )
    q = _quality(
        backend,
        image,
        coded.recon,
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
        decode_ms=coded.decode_ms,
        lmbda=coded.lmbda,
        setting=_setting(coded.lmbda, target_bpp, learned),
        psnr=q.psnr,
        ms_ssim=q.ms_ssim,
        lpips=q.lpips,
        lpips_convention=convention,
        caption=caption,
        learned=learned,
    )


# =============================================================================================
# The main comparison
# =============================================================================================


@dataclass
class CompareResult:
    """Everything one comparison produced (image, rows, notes)."""

    image: np.ndarray
    name: str
    model_set: ModelSet
    caption: str
    rate_text: str
    lmbda: float | None
    runs: list[CodecRun]
    notices: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    total_ms: float = 0.0
    random_weights: bool = False

    def run(self, row_id: str) -> CodecRun | None:
        return next((r for r in self.runs if r.row_id == row_id), None)

    @property
    def taco(self) -> CodecRun:
        run = self.run("taco")
        assert run is not None
        return run


def load_image(
    image: Any, backend: Backend | None = None, max_side: int = MAX_SIDE
) -> tuple[np.ndarray, list[str], str]:
    """(uint8 HxWx3, notices, display name) for a path, array or PIL image; ImageInputError else."""
    backend = backend or default_backend()
    if image is None or (isinstance(image, str) and not image.strip()):
        raise ImageInputError("no image: upload one or pick an example")
    name = "image"
    if isinstance(image, str | os.PathLike):
        name = Path(image).stem or "image"
    elif isinstance(image, Mapping) and image.get("path"):  # a Gradio FileData dict
        name = Path(str(image.get("orig_name") or image["path"])).stem
        image = image["path"]
    arr, notices = backend.prepare_image(image, max_side)
    return arr, list(notices), _safe_stem(name)


def input_notice(image: Any, backend: Backend | None = None) -> str:
    """One line under the upload: the size the demo will work at and any conversion notices."""
    if image is None or (isinstance(image, str) and not image.strip()):
        return ""
    try:
        arr, notices, _ = load_image(image, backend)
    except TacoError as exc:
        return f"**Cannot use this image:** {html.escape(_one_line(exc), quote=False)}"
    text = f"{arr.shape[1]}×{arr.shape[0]} px"
    if notices:
        text += " · " + "; ".join(html.escape(n, quote=False) for n in notices)
    return text


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    return stem[:40]


def _load_learned(backend: Backend, name: str, ms: ModelSet) -> Any:
    return backend.load_codec(name, allow_random=ms.allow_random)


def _is_random(codec: Codec) -> bool:
    return codec.capabilities.random_weights


def run_compare(
    image: Any,
    caption: str = "",
    rate: float = DEFAULT_RATE,
    *,
    target_bpp: float | None = None,
    model_set: ModelSet | str | None = None,
    rate_matched: bool = False,
    classical: Sequence[str] = CLASSICAL_CODECS,
    lpips_convention: LpipsConvention = "standard",
    backend: Backend | None = None,
    progress: ProgressFn | None = None,
    use_cache: bool = True,
) -> CompareResult:
    """One full comparison: TACO and ELIC encode + decode + metrics (the `make bench` unit).

    ``rate`` is the slider position 0–100 (low → high bitrate), mapped to the TACO model's λ
    (log-uniform over a variable-rate range, nearest rung of a fixed-rate ladder). With
    ``target_bpp`` TACO's λ is searched to hit that bpp instead. ELIC runs at the same λ.
    ``rate_matched`` adds ELIC and the classical codecs searched to TACO's achieved bpp.
    """
    t_start = time.perf_counter()
    backend = backend or default_backend()
    progress = progress or _no_progress
    ms = pick_model_set(model_set)
    if target_bpp is not None and not (math.isfinite(target_bpp) and 0.005 <= target_bpp <= 24):
        raise TacoError(f"target bpp must be between 0.005 and 24, got {target_bpp:g}")
    if lpips_convention not in LPIPS_LABELS:
        raise TacoError(f"LPIPS convention must be 'standard' or 'paper', not {lpips_convention!r}")

    progress(0.02, "Reading the image")
    arr, notices, name = load_image(image, backend)
    digest = image_digest(arr)
    caption = backend.clean_caption(caption or "")
    notes: list[str] = []

    progress(0.08, f"Loading {ms.taco}")
    taco_codec = _load_learned(backend, ms.taco, ms)
    spec = RateSpec.of(taco_codec)
    lam = spec.lmbda_at(rate)
    rate_text = spec.describe(rate)
    random_weights = _is_random(taco_codec)

    def run(codec: Any, **kwargs: Any) -> CodecRun:
        """One codec on this request's image, with this request's metrics settings and notes."""
        return _run_codec(backend, codec, arr, digest, convention=lpips_convention,
                          use_cache=use_cache, notes=notes, **kwargs)

    progress(0.15, "TACO: encode (caption → text adapter) and decode")
    runs: list[CodecRun] = []
    taco = run(
        taco_codec,
        row_id="taco",
        label="TACO",
        caption=caption,
        lmbda=None if target_bpp else lam,
        target_bpp=target_bpp,
    )
    runs.append(taco)
    if target_bpp is not None:
        rate_text = (
            f"target {target_bpp:.3f} bpp → TACO λ = {taco.lmbda:.3g}, {taco.bpp:.3f} bpp achieved"
            if taco.lmbda is not None
            else f"target {target_bpp:.3f} bpp → {taco.bpp:.3f} bpp achieved"
        )
        lam = taco.lmbda

    elic_codec = None
    if ms.elic:
        progress(0.45, f"Loading {ms.elic}")
        try:
            elic_codec = _load_learned(backend, ms.elic, ms)
            random_weights = random_weights or _is_random(elic_codec)
        except TacoError as exc:
            notes.append(f"ELIC unavailable: {_one_line(exc)}")
    if elic_codec is not None:
        progress(0.5, "ELIC: encode and decode (no text)")
        elic_lam = RateSpec.of(elic_codec).fit(lam)
        runs.append(run(elic_codec, row_id="elic", label="ELIC (same λ)", lmbda=elic_lam))

    if rate_matched:
        target = taco.bpp
        if elic_codec is not None:
            progress(0.65, f"ELIC: searching λ for {target:.3f} bpp")
            try:
                runs.append(run(elic_codec, row_id="elic@bpp", label="ELIC @ TACO bpp", target_bpp=target))
            except TacoError as exc:
                notes.append(f"ELIC rate matching failed: {_one_line(exc)}")
        for i, cname in enumerate(classical):
            progress(0.8 + 0.05 * i, f"{cname.upper()}: searching quality for {target:.3f} bpp")
            try:
                codec = backend.classical_codec(cname)
                runs.append(
                    run(
                        codec,
                        row_id=f"{cname}@bpp",
                        label=f"{cname.upper() if cname != 'webp' else 'WebP'} @ TACO bpp",
                        target_bpp=target,
                        learned=False,
                    )
                )
            except TacoError as exc:
                notes.append(f"{cname.upper()} unavailable: {_one_line(exc)}")
    progress(1.0, "Done")
    return CompareResult(
        image=arr,
        name=name,
        model_set=ms,
        caption=caption,
        rate_text=rate_text,
        lmbda=lam,
        runs=runs,
        notices=notices,
        notes=notes,
        total_ms=(time.perf_counter() - t_start) * 1e3,
        random_weights=random_weights,
    )


# =============================================================================================
# Presenting a comparison
# =============================================================================================

METRIC_COLUMNS = [
    "Codec",
    "Setting",
    "Bytes",
    "bpp",
    "PSNR dB ↑",
    "MS-SSIM ↑",
    "LPIPS ↓",
    "Enc. ms",
    "Dec. ms",
]


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "∞"
    if math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def metrics_rows(runs: Iterable[CodecRun]) -> list[list[str | int]]:
    """Table rows (strings, formatted for display; bytes as int)."""
    rows: list[list[str | int]] = []
    for r in runs:
        rows.append(
            [
                r.label,
                r.setting,
                r.n_bytes,
                _fmt(r.bpp, 4),
                _fmt(r.psnr, 2),
                _fmt(r.ms_ssim, 4),
                _fmt(r.lpips, 4),
                _fmt(r.encode_ms, 0),
                _fmt(r.decode_ms, 0),
            ]
        )
    return rows


def metrics_frame(result: CompareResult) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(metrics_rows(result.runs), columns=METRIC_COLUMNS)


def empty_metrics_frame() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([], columns=METRIC_COLUMNS)


def metrics_records(result: CompareResult) -> list[dict[str, Any]]:
    """Machine-readable rows (floats, not strings), e.g. for the API's JSON output."""
    out = []
    for r in result.runs:
        out.append(
            {
                "codec": r.row_id,
                "label": r.label,
                "lmbda": r.lmbda,
                "bytes": r.n_bytes,
                "bpp": r.bpp,
                "psnr": None if math.isinf(r.psnr) else r.psnr,
                "ms_ssim": r.ms_ssim,
                "lpips": r.lpips,
                "lpips_convention": r.lpips_convention,
                "encode_ms": r.encode_ms,
                "decode_ms": r.decode_ms,
            }
        )
    return out


VIEWS: dict[str, tuple[str, str]] = {
    "TACO | ELIC": ("taco", "elic"),
    "Original | TACO": ("original", "taco"),
    "Original | ELIC": ("original", "elic"),
    "TACO | ELIC @ TACO bpp": ("taco", "elic@bpp"),
    "TACO | JPEG @ TACO bpp": ("taco", "jpeg@bpp"),
}
DEFAULT_VIEW = "TACO | ELIC"


def slider_pair(result: CompareResult, view: str = DEFAULT_VIEW) -> tuple[np.ndarray, np.ndarray]:
    """The two images of the main slider for a view (falls back to the original if missing)."""
    left, right = VIEWS.get(view, VIEWS[DEFAULT_VIEW])

    def pick(row: str) -> np.ndarray:
        if row == "original":
            return result.image
        run = result.run(row)
        return run.recon if run is not None else result.image

    return pick(left), pick(right)


_SIDE_NAMES = {
    "original": "Original",
    "taco": "TACO",
    "elic": "ELIC (same λ)",
    "elic@bpp": "ELIC @ TACO bpp",
    "jpeg@bpp": "JPEG @ TACO bpp",
}


def side_labels_html(left: str, right: str) -> str:
    """A bar above a slider naming its left and right image."""
    return (
        '<div class="taco-sides"><span class="taco-side-left">◀ '
        f'{left}</span><span class="taco-side-right">{right} ▶</span></div>'
    )


def view_labels_html(view: str = DEFAULT_VIEW) -> str:
    left, right = VIEWS.get(view, VIEWS[DEFAULT_VIEW])
    return side_labels_html(_SIDE_NAMES[left], _SIDE_NAMES[right])


def view_note(result: CompareResult, view: str = DEFAULT_VIEW) -> str:
    left, right = VIEWS.get(view, VIEWS[DEFAULT_VIEW])
    missing = [r for r in (left, right) if r != "original" and result.run(r) is None]
    if not missing:
        return ""
    return (
        f"*{', '.join(missing)} was not computed (turn on “rate-matched rows” or check the "
        "notes); showing the original instead.*"
    )


# --- colour maps (hand-picked anchors, interpolated; no matplotlib needed) --------------------

_HEAT_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float64,
)


def _lut(anchors: np.ndarray) -> np.ndarray:
    xs = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, 256)
    return (
        np.stack([np.interp(t, xs, anchors[:, c]) for c in range(3)], axis=1)
        .round()
        .astype(np.uint8)
    )


HEAT_LUT = _lut(_HEAT_ANCHORS)


def heat_css_gradient() -> str:
    stops = ", ".join(
        f"rgb({r},{g},{b}) {100 * i / (len(_HEAT_ANCHORS) - 1):.0f}%"
        for i, (r, g, b) in enumerate(_HEAT_ANCHORS.astype(int))
    )
    return f"linear-gradient(to right, {stops})"


def abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel |a − b| averaged over RGB, in 8-bit levels (float32, HxW)."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=2).astype(np.float32)


def shared_scale(maps: Sequence[np.ndarray], percentile: float = 99.5, floor: float = 1.0) -> float:
    """One colour-scale maximum for several maps (a high percentile, so outliers do not wash out)."""
    vals = [np.percentile(m, percentile) for m in maps if m.size]
    vmax = max([floor, *vals])
    return float(min(255.0, math.ceil(vmax)))


def colorize(err: np.ndarray, vmax: float) -> np.ndarray:
    """Map an HxW error array to RGB with the heat LUT on [0, vmax] (clipped above)."""
    idx = np.clip(err / max(vmax, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    return HEAT_LUT[idx]


@dataclass(frozen=True)
class ErrorMaps:
    left: np.ndarray
    right: np.ndarray
    vmax: float
    left_label: str
    right_label: str
    left_mean: float
    right_mean: float


def error_maps(result: CompareResult) -> ErrorMaps | None:
    """|x − x̂| of TACO and ELIC (same λ) on one colour scale."""
    taco, elic = result.run("taco"), result.run("elic")
    if taco is None:
        return None
    e_t = abs_diff(result.image, taco.recon)
    e_e = abs_diff(result.image, elic.recon) if elic is not None else np.zeros_like(e_t)
    vmax = shared_scale([e_t, e_e], floor=4.0)
    return ErrorMaps(
        colorize(e_t, vmax),
        colorize(e_e, vmax),
        vmax,
        "TACO |x − x̂|",
        "ELIC |x − x̂|" if elic is not None else "ELIC (not available)",
        float(e_t.mean()),
        float(e_e.mean()),
    )


def colorbar_html(vmax: float, what: str = "|x − x̂|, mean over RGB, 8-bit levels") -> str:
    """A colour bar for the heat maps (HTML)."""
    mid = vmax / 2
    return (
        '<div class="taco-colorbar">'
        f'<div class="taco-colorbar-bar" style="background:{heat_css_gradient()}"></div>'
        '<div class="taco-colorbar-ticks">'
        f"<span>0</span><span>{mid:g}</span><span>≥ {vmax:g}</span></div>"
        f'<div class="taco-colorbar-label">{what}. Both maps share this scale.</div></div>'
    )


def error_legend_html(maps: ErrorMaps) -> str:
    """Colour bar plus the mean error of each side."""
    return (
        colorbar_html(maps.vmax)
        + '<div class="taco-err-means"><b>Mean |x − x̂|</b> (8-bit levels)<br>'
        f"{maps.left_label.split(' ')[0]}: <b>{maps.left_mean:.2f}</b><br>"
        f"{maps.right_label.split(' ')[0]}: <b>{maps.right_mean:.2f}</b></div>"
        '<p class="taco-small">Brighter = larger error. Learned codecs spread their error '
        "differently from JPEG-like codecs: look at edges and textures.</p>"
    )


def status_markdown(result: CompareResult) -> str:
    """The status line above the results: what was done, and anything the user should know."""
    taco = result.taco
    lines = [
        f"**{result.image.shape[1]}×{result.image.shape[0]} px** · {result.rate_text} · "
        f"TACO {taco.bpp:.3f} bpp ({taco.n_bytes:,} bytes) · done in "
        f"{result.total_ms / 1e3:.1f} s",
    ]
    cap = result.caption
    if cap:
        short = cap if len(cap) <= 90 else cap[:87] + "…"
        lines.append(f"Caption given to TACO's **encoder only**: “{short}” (0 bits in the file)")
    else:
        lines.append("No caption: TACO encoded with an empty caption.")
    if result.random_weights:
        lines.append(
            "**Random weights** (development mode): reconstructions are noise; "
            "only the pipeline is being shown."
        )
    for n in result.notices:
        lines.append(f"*Input:* {n}")
    for n in result.notes:
        lines.append(f"*Note:* {n}")
    return "\n\n".join(lines)


# --- bitstream downloads --------------------------------------------------------------------

DOWNLOAD_DIR = Path(tempfile.gettempdir()) / "taco-demo-downloads"
DOWNLOAD_MAX_AGE_S = 3600.0


def _prune(folder: Path, max_age_s: float) -> None:
    now = time.time()
    if not folder.is_dir():
        return
    for p in folder.glob("*/*"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                p.unlink()
        except OSError:
            continue
    for d in folder.iterdir():
        try:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        except OSError:
            continue


def write_bitstreams(
    result: CompareResult, out_dir: Path | None = None, rows: Sequence[str] = ("taco", "elic")
) -> dict[str, Path]:
    """Write the `.taco` files of the learned codecs; returns row id → path."""
    base = out_dir or DOWNLOAD_DIR
    if out_dir is None:
        _prune(base, DOWNLOAD_MAX_AGE_S)
    folder = base / image_digest(result.image)[:10]
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for row in rows:
        run = result.run(row)
        if run is None:
            continue
        tag = row.replace("@", "-at-")
        p = folder / f"{result.name}_{tag}_{run.bpp:.3f}bpp.taco"
        p.write_bytes(run.data)
        paths[row] = p
    return paths


def download_label(result: CompareResult, row: str) -> str:
    run = result.run(row)
    if run is None:
        return f"{row.upper()} .taco (not available)"
    name = "TACO" if row == "taco" else "ELIC"
    return f"⬇ {name} bitstream · {run.n_bytes:,} bytes"


# =============================================================================================
# Caption tools
# =============================================================================================


def text_encoder_kind(ms: ModelSet, backend: Backend) -> str:
    """The text encoder of the set's TACO model (loading it; a missing model raises TacoError)."""
    codec = backend.load_codec(ms.taco, allow_random=ms.allow_random)
    kind = codec.capabilities.text_encoder
    if kind is None:
        raise TacoError(f"{ms.taco} reads no caption")
    return kind


_KIND_NAMES = {"minilm": "MiniLM (all-MiniLM-L6-v2)", "clip": "CLIP ViT-B/32 text tower"}


def caption_token_markdown(
    caption: str, model_set: ModelSet | str | None = None, backend: Backend | None = None
) -> str:
    """Token counter + truncation notice for the active text encoder."""
    backend = backend or default_backend()
    try:
        ms = pick_model_set(model_set)
        text = backend.clean_caption(caption or "")
        kind = text_encoder_kind(ms, backend)
        info = backend.token_info(kind, text)
    except TacoError as exc:
        return f"Token count unavailable: {exc}"
    enc = _KIND_NAMES.get(kind, kind)
    n, max_len = int(info.n_tokens), int(info.max_len)
    if not text:
        return (
            f"Empty caption: TACO will encode with no text · {enc}, window {max_len} tokens "
            "(special tokens included)"
        )
    if info.truncated:
        kept = str(info.kept_text)
        kept = kept if len(kept) <= 120 else kept[:117] + "…"
        return f"**{n} / {max_len} tokens: truncated.** The encoder only sees: “{kept}” · {enc}"
    return f"**{n} / {max_len} tokens** (special tokens included) · {enc}"


def auto_caption(image: Any, current: str = "", backend: Backend | None = None) -> tuple[str, str]:
    """(caption, message). When BLIP is unavailable the current caption is kept, and said so."""
    backend = backend or default_backend()
    ok, reason = backend.captioner_available()
    if not ok:
        return current, f"Auto-caption unavailable ({reason}); your caption is unchanged."
    try:
        arr, _, _ = load_image(image, backend)
        text = backend.caption_image(Image.fromarray(arr))
    except TacoError as exc:
        return current, f"Auto-caption failed: {_one_line(exc)}; your caption is unchanged."
    text = backend.clean_caption(text)
    if not text:
        return current, "The captioner returned nothing; your caption is unchanged."
    return text, f"Caption written by BLIP: “{text}”. Edit it freely."


# =============================================================================================
# Caption-effect explorer
# =============================================================================================

CAPTION_EFFECT_NOTE = """\
**What to expect.** The caption only steers TACO's *encoder* (through a cross-attention adapter);
the decoder never sees it and it costs 0 bits. With the official checkpoints, swapping the caption
for an empty or an unrelated one changes LPIPS by about 1 % and bpp by under 0.6 %
(λ = 0.0008 on Kodak: LPIPS 0.02553 correct / 0.02535 empty / 0.02557 random caption;
bpp 0.1825 / 0.1836 / 0.1827, third-party measurements by yuenler/TACO) and the empty caption is
sometimes *better*. TACO's gain over ELIC comes mostly from how it was trained, not from the
caption you type. Small differences below are therefore the expected result, not a bug.
"""


@dataclass
class CaptionEffect:
    image: np.ndarray
    runs: list[CodecRun]  # [your caption, empty, second]
    rate_text: str
    notices: list[str]
    notes: list[str]
    random_weights: bool = False

    def run(self, row_id: str) -> CodecRun | None:
        return next((r for r in self.runs if r.row_id == row_id), None)


CAPTION_ROWS = ("caption:yours", "caption:empty", "caption:second")
CAPTION_VIEWS: dict[str, str] = {
    "Your caption | empty caption": "caption:empty",
    "Your caption | second caption": "caption:second",
}


def run_caption_effect(
    image: Any,
    caption: str,
    second_caption: str,
    rate: float = DEFAULT_RATE,
    *,
    model_set: ModelSet | str | None = None,
    backend: Backend | None = None,
    progress: ProgressFn | None = None,
    use_cache: bool = True,
) -> CaptionEffect:
    """TACO on one image under three captions (yours, empty, a second one) at the same λ."""
    backend = backend or default_backend()
    progress = progress or _no_progress
    ms = pick_model_set(model_set)
    progress(0.02, "Reading the image")
    arr, notices, _ = load_image(image, backend)
    digest = image_digest(arr)
    progress(0.1, f"Loading {ms.taco}")
    codec = _load_learned(backend, ms.taco, ms)
    spec = RateSpec.of(codec)
    lam = spec.lmbda_at(rate)
    notes: list[str] = []
    captions = [
        ("caption:yours", "Your caption", backend.clean_caption(caption or "")),
        ("caption:empty", "Empty caption", ""),
        ("caption:second", "Second caption", backend.clean_caption(second_caption or "")),
    ]
    runs: list[CodecRun] = []
    for i, (row, label, text) in enumerate(captions):
        progress(0.15 + 0.27 * i, f"TACO with the {label.lower()}")
        runs.append(
            _run_codec(
                backend,
                codec,
                arr,
                digest,
                row_id=row,
                label=label,
                caption=text,
                lmbda=lam,
                convention="standard",
                with_ms_ssim=False,
                use_cache=use_cache,
                notes=notes,
            )
        )
    if not captions[0][2]:
        notes.append("Your caption is empty, so the first two rows are the same encode.")
    if not captions[2][2]:
        notes.append("The second caption is empty, so it equals the empty-caption row.")
    progress(1.0, "Done")
    return CaptionEffect(arr, runs, spec.describe(rate), notices, notes, _is_random(codec))


def caption_effect_rows(effect: CaptionEffect) -> list[list[str]]:
    base = effect.runs[0]
    rows = []
    for r in effect.runs:
        d_bpp = 100.0 * (r.bpp - base.bpp) / base.bpp if base.bpp else 0.0
        d_psnr = r.psnr - base.psnr if math.isfinite(r.psnr) and math.isfinite(base.psnr) else 0.0
        d_lp = (
            100.0 * (r.lpips - base.lpips) / base.lpips
            if r.lpips is not None and base.lpips
            else None
        )
        text = r.caption if r.caption else "(empty)"
        text = text if len(text) <= 60 else text[:57] + "…"
        same = r is base
        rows.append(
            [
                r.label,
                text,
                f"{r.bpp:.4f}",
                "—" if same else f"{d_bpp:+.2f} %",
                _fmt(r.psnr, 2),
                "—" if same else f"{d_psnr:+.3f}",
                _fmt(r.lpips, 4),
                "—" if same else ("n/a" if d_lp is None else f"{d_lp:+.2f} %"),
            ]
        )
    return rows


CAPTION_COLUMNS = [
    "Encoded with",
    "Caption",
    "bpp",
    "Δbpp",
    "PSNR dB",
    "ΔPSNR dB",
    "LPIPS",
    "ΔLPIPS",
]


def caption_effect_frame(effect: CaptionEffect) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(caption_effect_rows(effect), columns=CAPTION_COLUMNS)


@dataclass(frozen=True)
class DiffMaps:
    vs_empty: np.ndarray
    vs_second: np.ndarray
    vmax: float
    max_empty: float
    max_second: float
    changed_empty: float  # fraction of pixels that differ
    changed_second: float


def caption_diff_maps(effect: CaptionEffect) -> DiffMaps:
    """|x̂(your caption) − x̂(other)| for the empty and the second caption, on one scale."""
    yours = effect.runs[0].recon
    d_e = abs_diff(yours, effect.runs[1].recon)
    d_s = abs_diff(yours, effect.runs[2].recon)
    vmax = shared_scale([d_e, d_s], percentile=99.9, floor=1.0)
    return DiffMaps(
        colorize(d_e, vmax),
        colorize(d_s, vmax),
        vmax,
        float(d_e.max(initial=0)),
        float(d_s.max(initial=0)),
        float((d_e > 0).mean()),
        float((d_s > 0).mean()),
    )


def caption_effect_pair(
    effect: CaptionEffect, view: str = "Your caption | empty caption"
) -> tuple[np.ndarray, np.ndarray]:
    other = effect.run(CAPTION_VIEWS.get(view, "caption:empty")) or effect.runs[1]
    return effect.runs[0].recon, other.recon


def caption_effect_summary(effect: CaptionEffect, maps: DiffMaps) -> str:
    lines = [f"Same image, same {effect.rate_text.split(' (')[0]}; only the caption changes."]
    for label, mx, frac in (
        ("empty caption", maps.max_empty, maps.changed_empty),
        ("second caption", maps.max_second, maps.changed_second),
    ):
        if mx == 0:
            lines.append(f"- vs the {label}: **bit-identical reconstruction**.")
        else:
            lines.append(
                f"- vs the {label}: {100 * frac:.1f} % of pixels differ, by at most "
                f"{mx:.0f} levels."
            )
    if effect.random_weights:
        lines.append("*Random weights:* the size of these differences means nothing.")
    for n in effect.notices:
        lines.append(f"*Input:* {n}")
    for n in effect.notes:
        lines.append(f"*Note:* {n}")
    return "\n".join(lines)


# =============================================================================================
# Decoding an uploaded .taco file
# =============================================================================================

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: Largest image (pixels) the decode tab reconstructs. A 193-byte file may claim any size up to
#: the codec's own bound (``TACO_MAX_PIXELS``, 4.2 MP), which costs ~1 min of CPU on the official
#: architecture while the queue (concurrency 1) waits; the demo itself writes at most
#: MAX_SIDE² pixels, so the default bound is twice that. ``python -m app decompress`` has no
#: such limit beyond the codec's.
DECODE_MAX_PIXELS = int(os.environ.get("TACO_UI_MAX_DECODE_PIXELS", str(2 * MAX_SIDE * MAX_SIDE)))


def decode_bitstream(file: Any, backend: Backend | None = None) -> tuple[np.ndarray, str]:
    """Decode a `.taco` file with the model its header names. No caption is involved."""
    backend = backend or default_backend()
    if file is None:
        raise BitstreamError("no file: upload a .taco file")
    if isinstance(file, bytes | bytearray):
        data = bytes(file)
        fname = "upload.taco"
    else:
        path = Path(file["path"] if isinstance(file, Mapping) else str(file))
        fname = path.name
        try:
            size = path.stat().st_size
        except OSError:
            raise BitstreamError(f"cannot read {fname}") from None
        if size > MAX_UPLOAD_BYTES:
            raise BitstreamError(f"{fname} is larger than {MAX_UPLOAD_BYTES >> 20} MB")
        data = path.read_bytes()
    header = backend.read_header(data)
    h, w = int(header.height), int(header.width)
    if h * w > DECODE_MAX_PIXELS:  # a forged header must not buy work: refuse before any model runs
        raise BitstreamError(
            f"{_safe_stem(Path(fname).stem)} holds a {w}×{h} image; this demo decodes up to "
            f"{DECODE_MAX_PIXELS / 1e6:.1f} MP — use `python -m app decompress` for bigger files"
        )
    t0 = time.perf_counter()
    # a stranger's file: a backend that can decode in a separate process does (app.sandbox)
    img = backend.decompress_untrusted(data)
    ms = (time.perf_counter() - t0) * 1e3
    arr = _to_uint8(img)
    lam = header.lmbda
    lam_text = "n/a" if lam is None or not math.isfinite(lam) else f"{lam:.4g}"
    fp = header.fingerprint
    info = "\n".join(
        [
            "**Decoded without any caption**: the file holds no text and the decoder takes none, "
            "which is TACO's point: the caption helps the encoder only and costs 0 bits.",
            "",
            "| Field | Value |",
            "|---|---|",
            f"| File | `{_safe_stem(Path(fname).stem)}` |",
            f"| Model (from the header) | `{header.model_id}` |",
            f"| Weights fingerprint | `{fp.hex()}` |",
            f"| λ | {lam_text} |",
            f"| Size | {w} × {h} px |",
            f"| File size | {len(data):,} bytes = {8 * len(data) / (h * w):.4f} bpp |",
            f"| Coding | {_coding_text(header)} |",
            f"| Decode time | {ms:.0f} ms |",
        ]
    )
    return arr, info


def _coding_text(header: Header) -> str:
    """How the file was coded, and what that means for decoding elsewhere."""
    if header.version == 1:
        return ("version 1, float entropy model, no symbols check (decodes correctly only on a "
                "CPU with the encoder's float kernels)")
    if header.coding == "float":
        return ("version 2, float (official arithmetic): checked — decodes exactly or is refused "
                "where the float kernels differ")
    return "version 2, portable (exact integer entropy model): decodes the same on every machine"


# =============================================================================================
# Reference RD curves
# =============================================================================================


@dataclass(frozen=True)
class RefCurve:
    """A reference rate–distortion curve (averaged over a dataset)."""

    name: str
    bpp: tuple[float, ...]
    psnr: tuple[float | None, ...] = ()
    lpips: tuple[float | None, ...] = ()
    lpips_convention: str = "standard"
    dataset: str = "Kodak"
    source: str = ""
    published: bool = False


#: Third-party published numbers (official TACO checkpoints and official ELIC on Kodak), drawn
#: dotted and labelled with their sources.
PUBLISHED_CURVES: tuple[RefCurve, ...] = (
    RefCurve(
        name="Official TACO checkpoints",
        bpp=(0.1825, 0.2265, 0.3215, 0.4498, 0.5663),
        lpips=(0.0255, 0.0240, 0.0215, 0.0173, 0.0143),
        lpips_convention="paper",
        source="yuenler/TACO (third-party run of the official code, OFA captions)",
        published=True,
    ),
    RefCurve(
        name="Official ELIC (MSE-trained)",
        bpp=(0.047, 0.077, 0.124, 0.196, 0.333, 0.491, 0.704, 0.857, 1.106, 1.490),
        psnr=(26.27, 27.68, 29.13, 30.70, 32.80, 34.59, 36.49, 37.62, 39.18, 41.07),
        source="JiangWeibeta/ELIC results/elic_official_kodak.csv",
        published=True,
    ),
)

_PSNR_KEYS = ("psnr", "psnr-rgb", "psnr_rgb", "psnr_db")
_LPIPS_KEYS = ("lpips", "lpips_standard", "lpips-standard", "lpips_alex")
_LPIPS_PAPER_KEYS = ("lpips_paper", "lpips-paper")


def _first(d: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return None


def _floats(values: Any) -> tuple[float | None, ...]:
    out: list[float | None] = []
    for v in values or ():
        try:
            f = float(v)
            out.append(f if math.isfinite(f) else None)
        except (TypeError, ValueError):
            out.append(None)
    return tuple(out)


def _curves_from_results(
    name: str, res: Mapping[str, Any], dataset: str, source: str
) -> list[RefCurve]:
    bpp = _floats(res.get("bpp"))
    if not bpp or any(b is None for b in bpp):
        return []

    def column(keys: Sequence[str]) -> tuple[float | None, ...]:
        vals = _floats(_first(res, keys))
        ok = len(vals) == len(bpp) and any(v is not None for v in vals)
        return vals if ok else ()

    psnr, lp, lp_paper = column(_PSNR_KEYS), column(_LPIPS_KEYS), column(_LPIPS_PAPER_KEYS)
    xs = tuple(b for b in bpp if b is not None)
    curves = []
    if psnr or lp:
        curves.append(RefCurve(name, xs, psnr, lp, "standard", dataset, source))
    if lp_paper:
        curves.append(RefCurve(name, xs, (), lp_paper, "paper", dataset, source))
    return curves


def _curves_from_points(
    points: Sequence[Mapping[str, Any]], dataset: str, source: str
) -> list[RefCurve]:
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for p in points:
        if not isinstance(p, Mapping):
            continue
        name = p.get("model") or p.get("codec") or p.get("name")
        if name and "bpp" in p:
            by_model.setdefault(str(name), []).append(p)
    curves = []
    for name, pts in by_model.items():
        pts = sorted(pts, key=lambda q: float(q["bpp"]))
        res = {
            "bpp": [q["bpp"] for q in pts],
            "psnr": [_first(q, _PSNR_KEYS) for q in pts],
            "lpips": [_first(q, _LPIPS_KEYS) for q in pts],
            "lpips_paper": [_first(q, _LPIPS_PAPER_KEYS) for q in pts],
        }
        curves += _curves_from_results(name, res, dataset, source)
    return curves


_PRETTY = {
    "taco": "TACO",
    "elic": "ELIC",
    "jpeg": "JPEG",
    "webp": "WebP",
    "avif": "AVIF",
    "taco-official": "TACO (official)",
    "elic-official": "ELIC (official)",
}


def _pretty(name: str) -> str:
    return _PRETTY.get(name.strip().lower(), name)


def parse_reference_json(obj: Any, source: str = "") -> list[RefCurve]:
    """Read RD curves from the JSON shapes we accept (tolerant; unknown shapes give []).

    - `python -m app eval` summary: ``{"image_dir": ".../kodak", "codecs": {name: [{"bpp": ..,
      "psnr": .., "lpips": .., "lpips_paper": ..}, ...]}}`` (one point per rate)
    - CompressAI style: ``{"name": ..., "dataset"?: ..., "results": {"bpp": [...], "psnr": [...],
      "lpips": [...], "lpips_paper"?: [...]}}``
    - several models: ``{"models" | "curves" | "codecs": {name: {"bpp": [...], ...}}}``
    - points: ``[{"model": ..., "bpp": ..., "psnr": ..., "lpips": ...}, ...]`` or the same list
      under ``"points"`` / ``"rows"``.
    """
    curves: list[RefCurve] = []
    if isinstance(obj, list):
        return _curves_from_points(obj, "Kodak", source)
    if not isinstance(obj, Mapping):
        return curves
    dataset = obj.get("dataset")
    if not dataset and obj.get("image_dir"):
        dataset = Path(str(obj["image_dir"])).name.title()
    dataset = str(dataset or "Kodak")
    if isinstance(obj.get("results"), Mapping):
        curves += _curves_from_results(
            _pretty(str(obj.get("name") or obj.get("model") or source or "model")),
            obj["results"],
            dataset,
            source,
        )
    for key in ("models", "curves", "codecs"):
        block = obj.get(key)
        if isinstance(block, Mapping):
            for name, res in block.items():
                if isinstance(res, list):  # one point per rate
                    pts = [
                        {**p, "model": _pretty(str(name))} for p in res if isinstance(p, Mapping)
                    ]
                    curves += _curves_from_points(pts, dataset, source)
                elif isinstance(res, Mapping):
                    inner = res.get("results", res)
                    if isinstance(inner, Mapping):
                        curves += _curves_from_results(_pretty(str(name)), inner, dataset, source)
        elif isinstance(block, list):
            for item in block:
                if isinstance(item, Mapping):
                    curves += parse_reference_json(item, source)
    for key in ("points", "rows"):
        if isinstance(obj.get(key), list):
            curves += _curves_from_points(obj[key], dataset, source)
    return curves


def load_reference_curves(results_dir: Path | None = None, dataset: str | None = "Kodak"
                          ) -> list[RefCurve]:
    """Our own curves from docs/results/**/*.json (`python -m app eval`), if any.

    Only ``dataset`` (None: every dataset), and each (codec, dataset, LPIPS convention) once:
    several result folders hold the same measured rows (e.g. ``kodak`` and ``kodak_classical``).
    """
    found = _read_reference_curves(results_dir or RESULTS_DIR)
    seen: set[tuple[str, str, str]] = set()
    curves: list[RefCurve] = []
    for c in found:
        key = (c.name, c.dataset, c.lpips_convention)
        if (dataset is None or c.dataset.lower() == dataset.lower()) and key not in seen:
            seen.add(key)
            curves.append(c)
    return curves


def _read_reference_curves(folder: Path) -> list[RefCurve]:
    curves: list[RefCurve] = []
    if not folder.is_dir():
        return curves
    for p in sorted(folder.rglob("*.json")):
        try:
            if p.stat().st_size > 8 * 1024 * 1024:
                continue
            obj = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("cannot read reference curves from %s", p)
            continue
        curves += parse_reference_json(obj, source=f"docs/results/{p.relative_to(folder)}")
    return curves


@dataclass(frozen=True)
class RDPoint:
    label: str
    bpp: float
    psnr: float | None
    lpips: float | None
    row_id: str


def rd_points(runs: Iterable[CodecRun]) -> list[RDPoint]:
    return [
        RDPoint(
            r.label,
            r.bpp,
            r.psnr if math.isfinite(r.psnr) else None,
            r.lpips,
            r.row_id,
        )
        for r in runs
    ]


# =============================================================================================
# Examples
# =============================================================================================


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    label: str


def load_examples(assets_dir: Path | None = None) -> list[Example]:
    """The example photos with their hand-written captions (assets/captions.json)."""
    folder = assets_dir or ASSETS_DIR
    meta = folder / "captions.json"
    if not meta.is_file():
        return []
    try:
        items = json.loads(meta.read_text()).get("examples", [])
    except (OSError, ValueError):
        log.warning("cannot read %s", meta)
        return []
    out = []
    for item in items:
        p = folder / str(item.get("file", ""))
        if p.is_file():
            out.append(Example(p, str(item.get("caption", "")), str(item.get("label", p.stem))))
    return out


def examples_cache_tag(sets: Mapping[str, ModelSet], checkpoint_dir: Path | None = None) -> str:
    """A folder name that changes when the models change, so cached example outputs never go stale."""
    h = hashlib.sha1()
    for ms in sets.values():
        h.update(repr((ms.label, ms.taco, ms.elic, ms.allow_random)).encode())
    ckpt = checkpoint_dir or (ROOT / "checkpoints")
    for p in sorted(ckpt.glob("*.safetensors")) + sorted(ckpt.glob("manifest.json")):
        try:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        except OSError:
            continue
    h.update(f"max_side={MAX_SIDE}".encode())
    return "taco-" + h.hexdigest()[:12]
