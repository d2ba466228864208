"""The main comparison: TACO and ELIC (and the rate-matched rows) on one image."""

from __future__ import annotations

import html
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.errors import ImageInputError, TacoError, first_line
from app.ui.backend import Backend, default_backend
from app.ui.cache import image_digest
from app.ui.defaults import (
    CLASSICAL_CODECS,
    DEFAULT_RATE,
    LPIPS_LABELS,
    MAX_TARGET_BPP,
    MIN_TARGET_BPP,
    LpipsConvention,
    ProgressFn,
    no_progress,
)
from app.ui.defaults import (
    max_side as default_max_side,
)
from app.ui.model_sets import ModelSet, pick_model_set
from app.ui.rate import RateSpec
from app.ui.runs import CodecRun, is_coded, run_codec

if TYPE_CHECKING:  # pragma: no cover

    from app.codecs.protocol import Codec

log = logging.getLogger(__name__)


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
    #: set on a partial result (`run_compare`'s ``on_partial``): what is still being computed
    pending: str = ""

    def run(self, row_id: str) -> CodecRun | None:
        return next((r for r in self.runs if r.row_id == row_id), None)

    @property
    def taco(self) -> CodecRun:
        run = self.run("taco")
        assert run is not None
        return run


def load_image(
    image: Any, backend: Backend | None = None, max_side: int | None = None
) -> tuple[np.ndarray, list[str], str]:
    """(uint8 HxWx3, notices, display name) for a path, array or PIL image; ImageInputError else."""
    backend = backend or default_backend()
    if image is None or (isinstance(image, str) and not image.strip()):
        raise ImageInputError("no image: upload one or pick an example")
    name = "image"
    if isinstance(image, str | PathLike):
        name = Path(image).stem or "image"
    elif isinstance(image, Mapping) and image.get("path"):  # a Gradio FileData dict
        name = Path(str(image.get("orig_name") or image["path"])).stem
        image = image["path"]
    side = max_side if max_side is not None else default_max_side()
    arr, notices = backend.prepare_image(image, side)
    return arr, list(notices), safe_stem(name)


def input_notice(image: Any, backend: Backend | None = None) -> str:
    """One line under the upload: the size the demo will work at and any conversion notices."""
    if image is None or (isinstance(image, str) and not image.strip()):
        return ""
    try:
        arr, notices, _ = load_image(image, backend)
    except TacoError as exc:
        return f"**Cannot use this image:** {html.escape(first_line(exc), quote=False)}"
    text = f"{arr.shape[1]}×{arr.shape[0]} px"
    if notices:
        text += " · " + "; ".join(html.escape(n, quote=False) for n in notices)
    return text


def safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    return stem[:40]


def load_learned(backend: Backend, name: str, model_set: ModelSet) -> Any:
    return backend.load_codec(name, allow_random=model_set.allow_random)


def is_random(codec: Codec) -> bool:
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
    ms_ssim: bool = True,
    early: bool = False,
    on_partial: Callable[[CompareResult], None] | None = None,
) -> CompareResult:
    """One full comparison: TACO and ELIC encode + decode + metrics (the `make bench` unit).

    ``rate`` is the slider position 0–100 (low → high bitrate), mapped to the TACO model's λ
    (log-uniform over a variable-rate range, nearest rung of a fixed-rate ladder). With
    ``target_bpp`` TACO's λ is searched to hit that bpp instead. ELIC runs at the same λ.
    ``rate_matched`` adds ELIC and the classical codecs searched to TACO's achieved bpp.
    ``ms_ssim=False`` leaves MS-SSIM out (the page's first answer; its second step adds it).
    ``early=True`` (the first answer too) shows TACO's and ELIC's reconstructions from their
    encoders' own latents, which is what decoding their files gives here, and leaves the entropy
    decoding that confirms it (and their decode times) to the next call on the same image.
    ``on_partial`` (with ``rate_matched``) is called with the result so far once TACO's and
    ELIC's rows are done, while the rate-matched rows are still being searched.
    """
    t_start = time.perf_counter()
    backend = backend or default_backend()
    progress = progress or no_progress
    model_set = pick_model_set(model_set)
    if target_bpp is not None and not (
        math.isfinite(target_bpp) and MIN_TARGET_BPP <= target_bpp <= MAX_TARGET_BPP
    ):
        raise TacoError(
            f"target bpp must be between {MIN_TARGET_BPP:g} and {MAX_TARGET_BPP:g}, got {target_bpp:g}"
        )
    if lpips_convention not in LPIPS_LABELS:
        raise TacoError(f"LPIPS convention must be 'standard' or 'paper', not {lpips_convention!r}")

    progress(0.02, "Reading the image")
    arr, notices, name = load_image(image, backend)
    digest = image_digest(arr)
    caption = backend.clean_caption(caption or "")
    notes: list[str] = []

    progress(0.08, f"Loading {model_set.taco}")
    taco_codec = load_learned(backend, model_set.taco, model_set)
    spec = RateSpec.of(taco_codec)
    lam = spec.lmbda_at(rate)
    rate_text = spec.describe(rate)
    random_weights = is_random(taco_codec)

    def run(codec: Any, **kwargs: Any) -> CodecRun:
        """One codec on this request's image, with this request's metrics settings and notes."""
        return run_codec(backend, codec, arr, digest, convention=lpips_convention,
                          use_cache=use_cache, notes=notes, with_ms_ssim=ms_ssim,
                          early=early and use_cache, **kwargs)

    taco_lam = None if target_bpp else lam
    made = "made already" if early else "checking its file (entropy decoding)"
    progress(0.15, f"TACO: {made}"
             if use_cache and is_coded(taco_codec, digest, caption, taco_lam, target_bpp)
             else "TACO: encode (caption → text adapter) and decode")
    runs: list[CodecRun] = []
    taco = run(
        taco_codec,
        row_id="taco",
        label="TACO",
        caption=caption,
        lmbda=taco_lam,
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

    target = taco.bpp

    def result(rows: list[CodecRun], row_notes: list[str], pending: str = "") -> CompareResult:
        return CompareResult(image=arr, name=name, model_set=model_set, caption=caption,
                             rate_text=rate_text, lmbda=lam, runs=rows, notices=notices,
                             notes=row_notes, total_ms=(time.perf_counter() - t_start) * 1e3,
                             random_weights=random_weights, pending=pending)

    def classical_rows() -> list[CodecRun]:
        """The classical codecs' quality searches (Pillow encoders: they release the GIL)."""
        rows = []
        for cname in classical:
            try:
                codec = backend.classical_codec(cname)
                rows.append(run(
                    codec,
                    row_id=f"{cname}@bpp",
                    label=f"{cname.upper() if cname != 'webp' else 'WebP'} @ TACO bpp",
                    target_bpp=target,
                    learned=False,
                ))
            except TacoError as exc:
                notes.append(f"{cname.upper()} unavailable: {first_line(exc)}")
        return rows

    # The classical searches need only TACO's bpp: they start now and run beside ELIC's rows
    # (the two share the cores better than either alone: rANS coding, Python and
    # single-threaded encoders leave gaps). Rows keep their order.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="taco-classical") as pool:
        classical_future = pool.submit(classical_rows) if rate_matched else None
        elic_codec = None
        if model_set.elic:
            progress(0.45, f"Loading {model_set.elic}")
            try:
                elic_codec = load_learned(backend, model_set.elic, model_set)
                random_weights = random_weights or is_random(elic_codec)
            except TacoError as exc:
                notes.append(f"ELIC unavailable: {first_line(exc)}")
        if elic_codec is not None:
            elic_lam = RateSpec.of(elic_codec).fit(lam)
            progress(0.5, f"ELIC: {made}"
                     if use_cache and is_coded(elic_codec, digest, "", elic_lam, None)
                     else "ELIC: encode and decode (no text)")
            runs.append(run(elic_codec, row_id="elic", label="ELIC (same λ)", lmbda=elic_lam))
        if classical_future is not None:
            names = ", ".join(c.upper() for c in classical)
            if on_partial is not None:
                on_partial(result(list(runs), list(notes),
                                  f"searching ELIC λ and {names} quality for {target:.3f} bpp…"))
            progress(0.65, f"Searching ELIC λ and {names} quality for {target:.3f} bpp")
            if elic_codec is not None:
                try:
                    runs.append(run(elic_codec, row_id="elic@bpp", label="ELIC @ TACO bpp",
                                    target_bpp=target))
                except TacoError as exc:
                    notes.append(f"ELIC rate matching failed: {first_line(exc)}")
            runs.extend(classical_future.result())
    progress(1.0, "Done")
    return result(runs, notes)


#: The steps of `prepare_image`, in the order the page runs them (one event each, so a press
#: that comes meanwhile is served between them).
PREPARE_STEPS = ("first", "second", "classical")


def prepare_image(
    image: Any,
    rate: float = DEFAULT_RATE,
    *,
    step: str = "first",
    model_set: ModelSet | str | None = None,
    lpips_convention: LpipsConvention = "standard",
    classical: Sequence[str] = CLASSICAL_CODECS,
    backend: Backend | None = None,
) -> bool:
    """Do now what a comparison of this image needs whatever its caption; True if anything ran.

    The page runs it when an image arrives, while the user writes a caption, in three steps:
    ``"first"`` is ELIC's row at the slider's λ as the first step of :func:`run_compare` asks
    for it (the encoder's reconstruction, PSNR, LPIPS; with them the image's LPIPS reference
    features and ELIC's analysis latent, which TACO's row and ELIC's rate search reuse);
    ``"second"`` is what the second step adds to that row (the file confirmed by entropy
    decoding, MS-SSIM); ``"classical"`` runs the classical codecs' quality searches for ELIC's
    bpp, which TACO's bpp is close to, so the searches for TACO's bpp find most of their
    encodes already made. Everything goes into the caches the comparison reads; a comparison
    asked for meanwhile waits for an entry being made instead of computing it a second time, so
    starting early never costs a request time. Only TACO, which reads the caption, and what
    depends on its bpp are left for the button.
    """
    if step not in PREPARE_STEPS:
        raise TacoError(f"unknown preparation step {step!r}; one of {', '.join(PREPARE_STEPS)}")
    backend = backend or default_backend()
    model_set = pick_model_set(model_set)
    if not model_set.elic:
        return False
    arr, _, _ = load_image(image, backend)
    digest = image_digest(arr)
    taco_codec = load_learned(backend, model_set.taco, model_set)
    elic_codec = load_learned(backend, model_set.elic, model_set)
    elic_lam = RateSpec.of(elic_codec).fit(RateSpec.of(taco_codec).lmbda_at(rate))
    elic = run_codec(backend, elic_codec, arr, digest, row_id="elic", label="ELIC (same λ)",
                     lmbda=elic_lam, convention=lpips_convention,
                     with_ms_ssim=step != "first", early=step == "first")
    if step == "classical":
        for cname in classical:
            try:
                backend.classical_codec(cname).encode(arr, target_bpp=elic.bpp)
            except TacoError as exc:  # the comparison reports an unavailable codec itself
                log.info("%s: %s", cname, first_line(exc))
    return True
