"""Latency and memory benchmark: ``python -m app bench`` → JSON on stdout.

For each codec, on one image: ``warmup`` untimed compress/decompress rounds, then ``repeat``
timed ones; the **median** wall time (``time.perf_counter``) of compress and of decompress is
reported in ms, with the file size and bpp. ``peak_rss_mb`` is the process's peak resident set
size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after each codec and at the end — a
high-water mark of the whole process, so it only grows.

Default image: the first ``assets/*.png`` (sorted) if there is one, else scikit-image's
``astronaut`` (512×512, public domain). Default codecs: jpeg, webp, avif, plus taco and elic when
``app.codecs`` can load them (listed under ``"skipped"`` with the reason otherwise). Codecs named
with ``--codecs`` must load.

Extending: `run_bench` takes ``extra`` — named zero-argument callables timed the same way
(warm median, RSS after) and reported under ``"extra"`` — so further timings (e.g. a whole UI
request) plug in without touching the codec loop; `time_call` is the shared timer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import TacoError
from app.settings import get_settings

DEFAULT_CODECS: tuple[str, ...] = ("jpeg", "webp", "avif")
#: Learned codecs tried by default (skipped with a reason when they cannot be loaded).
OPTIONAL_CODECS: tuple[str, ...] = ("taco", "elic")


@dataclass
class Timing:
    """Median / min / max wall time in ms over ``repeat`` warm calls."""

    median_ms: float
    min_ms: float
    max_ms: float
    repeat: int

    @classmethod
    def of(cls, times_ms: Sequence[float]) -> Timing:
        return cls(statistics.median(times_ms), min(times_ms), max(times_ms), len(times_ms))

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready, rounded to 0.01 ms."""
        return {"median_ms": round(self.median_ms, 2), "min_ms": round(self.min_ms, 2),
                "max_ms": round(self.max_ms, 2), "repeat": self.repeat}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1.0 / (1024 * 1024) if sys.platform == "darwin" else 1.0 / 1024
    return round(peak * scale, 1)


def time_call(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> tuple[Timing, Any]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeat`` times timed; (timing, last result)."""
    if repeat < 1:
        raise TacoError("--repeat must be at least 1")
    result: Any = None
    for _ in range(max(0, warmup)):
        result = fn()
    times: list[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return Timing.of(times), result


def default_image_path() -> Path | None:
    """First ``assets/*.png`` by name, or None."""
    assets = get_settings().root / "assets"
    pngs = sorted(assets.glob("*.png")) if assets.is_dir() else []
    return pngs[0] if pngs else None


def load_bench_image(path: Path | None) -> tuple[np.ndarray, str]:
    """The benchmark image as HxWx3 uint8 and a label for the report."""
    from app.eval.io import load_rgb

    if path is None:
        path = default_image_path()
    if path is not None:
        return load_rgb(path), str(path)
    try:
        from skimage import data
    except ImportError as exc:
        raise TacoError("no assets/*.png and scikit-image is not installed: pass --image") from exc
    return np.ascontiguousarray(data.astronaut()), "skimage.data.astronaut"


def bench_codec(codec: Any, image: np.ndarray, rate: float | None = None, caption: str = "",
                repeat: int = 5, warmup: int = 1) -> dict[str, Any]:
    """Warm median compress and decompress latency of one codec on one image.

    Each round is `app.measure.code` (a real encode, then a decode of its bytes), the path the UI
    and the evaluation measure with.
    """
    from app.measure import code

    if repeat < 1:
        raise TacoError("--repeat must be at least 1")
    runs = [code(codec, image, caption, rate) for _ in range(max(0, warmup) + repeat)]
    runs = runs[max(0, warmup):]
    enc = Timing.of([r.encode_ms for r in runs])
    dec = Timing.of([r.decode_ms for r in runs])
    last = runs[-1]
    return {
        "rate": rate,
        "bytes": last.n_bytes,
        "bpp": round(last.bpp, 4),
        "compress": enc.as_dict(),
        "decompress": dec.as_dict(),
        "peak_rss_mb_after": peak_rss_mb(),
    }


def run_bench(
    image: np.ndarray,
    codecs: Mapping[str, Any],
    rate: float | None = None,
    caption: str = "",
    repeat: int = 5,
    warmup: int = 1,
    extra: Mapping[str, Callable[[], Any]] | None = None,
) -> dict[str, Any]:
    """Benchmark loaded ``codecs`` (name → codec) and any ``extra`` named callables."""
    report: dict[str, Any] = {"codecs": {}, "extra": {}}
    for name, codec in codecs.items():
        report["codecs"][name] = bench_codec(codec, image, rate, caption, repeat, warmup)
    for name, fn in (extra or {}).items():
        timing, _ = time_call(fn, repeat, warmup)
        report["extra"][name] = {**timing.as_dict(), "peak_rss_mb_after": peak_rss_mb()}
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def load_codecs(names: Sequence[str], optional: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Load codecs by name; failures of ``optional`` ones are returned as {name: reason}."""
    from app.eval.measure import get_codec

    loaded: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in names:
        loaded[name] = get_codec(name)
    for name in optional:
        try:
            loaded[name] = get_codec(name)
        except (TacoError, ImportError, OSError) as exc:
            skipped[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return loaded, skipped


def setup_args(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the ``bench`` options to ``parser`` (a new parser when None) and return it."""
    if parser is None:
        parser = argparse.ArgumentParser(prog="python -m app bench")
    parser.description = "Warm median compress/decompress latency and peak RSS per codec (JSON)."
    parser.add_argument("--image", type=Path, default=None,
                        help="image to encode (default: first assets/*.png, else skimage astronaut)")
    parser.add_argument("--codecs", default=None,
                        help="comma-separated codecs (default: jpeg,webp,avif + taco,elic if loadable)")
    parser.add_argument("--rate", type=float, default=None,
                        help="λ (learned) / quality (classical); default: each codec's default")
    parser.add_argument("--caption", default="", help="caption for learned codecs")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: %(default)s)")
    parser.add_argument("--ui", choices=("auto", "yes", "no"), default="auto",
                        help="time the UI's default request as a user waits for it (first "
                             "result, then the rate-matched rows); auto = when taco and elic load")
    parser.add_argument("--compare", choices=("auto", "yes", "no"), default="auto",
                        help="also time one full UI compare request (TACO + ELIC encode, decode and "
                             "metrics) on a 768x512 image; auto = when taco and elic load")
    return parser


def compare_image(image: np.ndarray) -> np.ndarray:
    """The bench image resized (Lanczos) to 768x512, the Kodak size the compare target is set for."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((768, 512), Image.Resampling.LANCZOS))


def compare_call(image: np.ndarray, caption: str) -> Callable[[], Any]:
    """One uncached compare request exactly as the UI's /compare endpoint runs it."""
    from app.ui.compare import run_compare

    img = compare_image(image)
    return lambda: run_compare(img, caption, 50.0, use_cache=False)


def ui_request(image: np.ndarray, caption: str, repeat: int = 5, warmup: int = 1,
               model_set: Any = None) -> dict[str, Any]:
    """The UI's default request as a user waits for it, on a 768x512 copy of ``image``.

    An image that arrives starts its caption-free work at once (``prepare``: ELIC's row at the
    slider's λ, then the classical quality searches for ELIC's bpp); pressing "Compare" runs the
    first step (TACO, and ELIC from the cache, with bpp, PSNR and LPIPS: what the page shows
    first) and the second (files confirmed, MS-SSIM, error maps, RD chart, and the rate-matched
    ELIC / JPEG / WebP / AVIF rows searched to TACO's bpp; the page gets the error maps and RD chart
    first, ``maps_and_chart``, then the rows). ``first_result`` and ``full`` time
    from the press for a user who took longer to write a caption than ``prepare`` took;
    ``first_result_at_once`` and ``full_at_once`` for one who pressed the moment the image
    arrived, before any of it had run. The UI's results cache, the codecs' kept latents and
    encodes and the kept LPIPS features are emptied before each round, so every round codes
    and scores the image afresh (models stay loaded). Warm medians over ``repeat`` rounds (each
    timing both ways) after ``warmup`` untimed ones.
    """
    import tempfile

    from PIL import Image

    from app.codecs import LearnedCodec
    from app.codecs.classical import CLASSICAL_CODECS, get_classical_codec
    from app.codecs.registry import loaded_codecs
    from app.metrics import forget_references
    from app.ui.backend import default_backend
    from app.ui.cache import RESULTS_CACHE
    from app.ui.defaults import DEFAULT_RATE, DEFAULT_TARGET_BPP
    from app.ui.events import COMPARE_FIELDS, Callbacks, CompareRequest
    from app.ui.model_sets import resolve_model_sets
    from app.ui.present import DEFAULT_VIEW

    if repeat < 1:
        raise TacoError("--repeat must be at least 1")
    backend = default_backend()
    sets = {model_set.label: model_set} if model_set is not None else resolve_model_sets(backend)
    cb = Callbacks(backend, sets, [])
    times: dict[str, list[float]] = {k: [] for k in (
        "prepare", "first_result", "maps_and_chart", "full", "first_result_at_once",
        "full_at_once")}
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/request.png"
        Image.fromarray(compare_image(image)).save(path)
        req = CompareRequest(path, caption, DEFAULT_RATE, False, DEFAULT_TARGET_BPP,
                             cb.default_set, True, DEFAULT_VIEW, "standard")
        values = [getattr(req, f) for f in COMPARE_FIELDS]
        prep_values = (req.image, req.rate, req.use_target, req.model_set, req.lpips_conv)

        def no_progress(*_: Any, **__: Any) -> None:
            return None

        def forget() -> None:
            RESULTS_CACHE.clear()  # and what the codecs and LPIPS keep about this image
            forget_references()
            for codec in loaded_codecs():
                if isinstance(codec, LearnedCodec):
                    codec.forget_images()
            for name in CLASSICAL_CODECS:
                get_classical_codec(name).forget_images()

        def page(prepared: bool) -> tuple[float, float, float, float]:
            """(prepare, first, maps and chart, full) in ms: one upload, its preparation if
            ``prepared``, one press; the last three timed from the press."""
            forget()
            t0 = time.perf_counter()
            if prepared:
                cb.prepare_first(*prep_values)
                cb.prepare_second(*prep_values)
                cb.prepare_classical(*prep_values)
            t1 = time.perf_counter()
            cb.compare_fast(*values, progress=no_progress)  # type: ignore[arg-type]
            t2 = time.perf_counter()
            updates = cb.compare_extras(*values, progress=no_progress)  # type: ignore[arg-type]
            next(updates)  # files checked, MS-SSIM, error maps, RD chart
            t_maps = time.perf_counter()
            for _ in updates:  # the rate-matched rows
                pass
            t3 = time.perf_counter()
            return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t_maps - t1) * 1e3, (t3 - t1) * 1e3

        for i in range(max(0, warmup) + repeat):
            prep, first, maps, full = page(prepared=True)
            _, first_now, _, full_now = page(prepared=False)
            if i >= max(0, warmup):
                for k, v in zip(times, (prep, first, maps, full, first_now, full_now),
                                strict=True):
                    times[k].append(v)
    return {"model_set": cb.default_set, "size": [768, 512],
            **{k: Timing.of(v).as_dict() for k, v in times.items()},
            "peak_rss_mb_after": peak_rss_mb()}


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``bench`` from parsed arguments; prints JSON; returns the exit code."""
    try:
        image, label = load_bench_image(args.image)
        if args.codecs:
            names = [c.strip().lower() for c in args.codecs.split(",") if c.strip()]
            codecs, skipped = load_codecs(names)
        else:
            codecs, skipped = load_codecs(DEFAULT_CODECS, OPTIONAL_CODECS)
        import torch

        extra: dict[str, Callable[[], Any]] = {}
        if args.compare == "yes" or (args.compare == "auto" and {"taco", "elic"} <= set(codecs)):
            extra["compare_768x512"] = compare_call(image, args.caption)
        report: dict[str, Any] = {
            "image": label,
            "size": [int(image.shape[1]), int(image.shape[0])],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            **run_bench(image, codecs, args.rate, args.caption, args.repeat, args.warmup, extra),
            "skipped": skipped,
        }
        if args.ui == "yes" or (args.ui == "auto" and {"taco", "elic"} <= set(codecs)):
            report["ui_default_request"] = ui_request(image, args.caption, args.repeat,
                                                      args.warmup)
    except TacoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2  # the CLI's exit code for user errors
    print(json.dumps(report, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app bench …``; returns the process exit code."""
    args = setup_args().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
