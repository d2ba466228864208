"""Rate–distortion evaluation: ``python -m app eval`` (CSV, summary JSON, plots, BD-rates).

For every (image, codec, rate) the codec really encodes and decodes the image; bpp comes from the
byte count (8·bytes / (H·W) of the original image), quality from the decoded pixels
(`app.metrics`; the demo's headline numbers, with the paper's conventions in extra columns):

==============  ============================================================================
column          meaning
==============  ============================================================================
image           file name inside ``--images``
codec, rate     codec name; λ for learned codecs, quality 1–100 for classical ones
width, height   original size; ``bytes``, ``bpp`` from the real encoded file
psnr            8-bit RGB PSNR (decoded image as the user gets it) — the headline
psnr_float      paper convention: [0, 1], x̂ unclamped/unrounded; needs the codec's optional
                ``decompress_float(data) -> HxWx3 float array`` hook. For 8-bit codecs (JPEG,
                WebP, AVIF) it is the same number as ``psnr``; empty when unavailable
ms_ssim         pytorch-msssim, data_range 1; ``ms_ssim_resized`` = 1 when the images were
                resized to a 256-px shorter side first (shorter side ≤ 160 px)
lpips           LPIPS-alex v0.1, standard convention (inputs scaled to [-1, 1])
lpips_paper     LPIPS-alex v0.1, TACO paper convention ([0, 1] inputs, no scaling)
encode_ms       wall time of ``compress`` (includes any text encoding for learned codecs)
decode_ms       wall time of ``decompress``
==============  ============================================================================

Outputs in ``--out``: ``results.csv`` (one row per image × codec × rate, appended as it goes;
a re-run skips rows already there), ``provenance.json`` (what made each (codec, rate) column:
the weights fingerprint of a learned codec, the Pillow version of a classical one, and the caption
mode — a re-run after new weights land recomputes that codec's rows instead of reusing stale
ones; rows with no provenance entry, e.g. copied in by hand, are trusted), ``summary.json`` (per codec and rate: the mean of each
column over the images — PSNR is averaged per image in dB, not from a mean MSE), ``report.md``
(the mean table and BD-rate tables), ``rd_plots.html`` (plotly) and ``rd_plots.png``
(matplotlib, an offline renderer; skipped if matplotlib is missing).

BD-rate (`bd_rate`): Bjøntegaard delta rate of a test codec against ``--anchor``, computed on the
per-codec curves of mean bpp vs mean quality. Log-rate is interpolated as a function of quality
and integrated over the *overlapping* quality interval; the result is
``(exp(mean Δlog-rate) − 1)·100`` %, negative = fewer bits than the anchor at equal quality.
Default interpolation: **piecewise cubic Hermite (PCHIP, Fritsch–Carlson monotone slopes)**,
``scipy.interpolate.PchipInterpolator``, integrated exactly (its ``integrate``), as in the newer
VCEG/JVET reference sheets; ``--bd-method cubic`` uses the
original VCEG-M33 least-squares cubic polynomial (needs ≥ 4 points). Quality is PSNR (dB),
MS-SSIM, and −LPIPS (LPIPS is lower-is-better, so its negation is used as quality).

Captions (``--captions JSON``): an object mapping file name (or file stem) to a caption string
or a list of captions. ``--caption-mode`` picks the policy (`app.eval_captions`): ``given`` (the
first caption), ``each`` (one row per caption), ``best-of`` (the lowest-LPIPS of all captions),
``empty``, ``other``; ``each`` and ``best-of`` add a ``caption`` column (the caption's index).
Images without an entry get the empty caption. Classical codecs ignore captions.

Sharding (`app.eval_dist`, `app.eval_units`): under ``torchrun`` each rank measures every
``WORLD_SIZE``-th work unit into ``--out/shards/rank*.csv``; rank 0 merges them into results.csv
(in unit order) and writes the rest. FID / KID (`app.realism`) are added to the summary and report when Inception
weights are available locally.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from scipy.interpolate import PchipInterpolator

from app import eval_captions, eval_dist
from app.errors import ConfigError, ImageInputError, MissingModelError, TacoError
from app.eval_captions import CAPTION_MODES, INDEXED_MODES
from app.realism import Realism

if TYPE_CHECKING:
    from app.eval_units import EvalPlan

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")

CSV_COLUMNS: tuple[str, ...] = (
    "image", "codec", "rate", "width", "height", "bytes", "bpp",
    "psnr", "psnr_float", "ms_ssim", "ms_ssim_resized", "lpips", "lpips_paper",
    "encode_ms", "decode_ms",
)
#: Columns averaged in the summary.
MEAN_COLUMNS: tuple[str, ...] = (
    "bpp", "psnr", "psnr_float", "ms_ssim", "lpips", "lpips_paper", "encode_ms", "decode_ms",
)

#: Default qualities for the classical codecs: about 0.1–1.5 bpp on Kodak (JPEG cannot go below
#: ≈ 0.2 bpp). JPEG keeps quality 50, the sanity anchor.
DEFAULT_CLASSICAL_RATES: dict[str, list[float]] = {
    "jpeg": [5, 10, 20, 35, 50, 75],
    "webp": [1, 10, 25, 50, 75, 85],
    "avif": [10, 20, 30, 40, 55, 70],
}
#: Number of log-spaced λ for a learned codec with a continuous ``rate_range`` and no ladder.
LEARNED_DEFAULT_POINTS = 6

BdMethod = Literal["pchip", "cubic"]
#: Quality metrics that get a BD-rate table: name -> (summary column, sign so higher is better).
BD_METRICS: dict[str, tuple[str, float]] = {
    "psnr": ("psnr", 1.0),
    "ms_ssim": ("ms_ssim", 1.0),
    "lpips": ("lpips", -1.0),
}


class EvalCodec(Protocol):
    """The part of the `Codec` protocol the evaluation uses."""

    name: str
    rate_range: tuple[float, float] | None
    rate_ladder: list[float] | None

    def compress(self, image: Any, caption: str = "", lmbda: float | None = None,
                 target_bpp: float | None = None) -> bytes: ...

    def decompress(self, data: bytes) -> Any: ...


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def shared_dir() -> Path:
    """The project's ``shared/`` folder: ``$TACO_SHARED`` or ``<repo>/../shared``."""
    env = os.environ.get("TACO_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def list_images(folder: Path, limit: int | None = None) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name, at most ``limit``."""
    if not folder.is_dir():
        raise ImageInputError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[: max(0, limit)]
    if not files:
        raise ImageInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def load_rgb(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 (EXIF orientation applied, any mode converted to RGB).

    No resizing: evaluation is at full resolution.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageInputError(f"cannot read image {path.name}: {exc}") from exc


#: Extra results.csv column of the ``each`` / ``best-of`` policies: index of the caption used.
CAPTION_COLUMN = "caption"


def csv_columns(caption_mode: str = "given") -> tuple[str, ...]:
    """The results.csv header a caption policy writes (`CSV_COLUMNS`, + ``caption`` if indexed)."""
    return (*CSV_COLUMNS, CAPTION_COLUMN) if caption_mode in INDEXED_MODES else CSV_COLUMNS


def load_captions(path: Path | None) -> dict[str, str]:
    """Captions JSON → {key: first caption} (the ``given`` policy; all captions:
    `app.eval_captions.load_caption_lists`)."""
    return {k: (v[0] if v else "") for k, v in eval_captions.load_caption_lists(path).items()}


def caption_for(captions: Mapping[str, str], image: Path) -> str:
    """The caption of ``image``: by file name, else by stem, else ``""``."""
    return captions.get(image.name, captions.get(image.stem, ""))


def format_rate(rate: float) -> str:
    """Canonical text of a rate value (the CSV key): ``50``, ``0.0008``."""
    return f"{float(rate):g}"


def parse_rates(specs: Sequence[str] | None, codecs: Sequence[str]) -> dict[str, list[float] | None]:
    """``--rates`` values → per-codec rate lists (None = the codec's default).

    Each spec is ``CODEC=r1,r2,...`` (for one codec) or ``r1,r2,...`` (for every codec without
    its own spec). Specs may be given several times or joined with ``;``.
    """
    result: dict[str, list[float] | None] = {c: None for c in codecs}
    common: list[float] | None = None
    for spec in specs or []:
        for part in filter(None, (s.strip() for s in spec.split(";"))):
            name, sep, values = part.partition("=")
            try:
                rates = [float(v) for v in (values if sep else name).split(",") if v.strip()]
            except ValueError as exc:
                raise ConfigError(f"bad --rates value {part!r}: {exc}") from exc
            if not rates:
                raise ConfigError(f"--rates {part!r} lists no rate")
            if sep:
                key = name.strip().lower()
                if key not in result:
                    raise ConfigError(f"--rates names codec {key!r}, which is not in --codecs")
                result[key] = rates
            else:
                common = rates
    if common is not None:
        for c in codecs:
            if result[c] is None:
                result[c] = list(common)
    return result


def default_rates(name: str, codec: EvalCodec) -> list[float]:
    """The default rate set of a codec (see ``--help``)."""
    if name in DEFAULT_CLASSICAL_RATES:
        return list(DEFAULT_CLASSICAL_RATES[name])
    if codec.rate_ladder:
        return [float(r) for r in codec.rate_ladder]
    if codec.rate_range:
        lo, hi = codec.rate_range
        return [float(r) for r in np.geomspace(lo, hi, LEARNED_DEFAULT_POINTS)]
    raise ConfigError(f"codec {name!r} has neither a rate ladder nor a rate range: pass --rates")


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


# --------------------------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def measure(codec: EvalCodec, image: np.ndarray, caption: str, rate: float,
            lpips_fn: Callable[..., float] | None = None) -> dict[str, str]:
    """Encode + decode one image at one rate; the CSV row (without ``image``) as strings."""
    return measure_decoded(codec, image, caption, rate, lpips_fn)[0]


def measure_decoded(codec: EvalCodec, image: np.ndarray, caption: str, rate: float,
                    lpips_fn: Callable[..., float] | None = None
                    ) -> tuple[dict[str, str], np.ndarray]:
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

    return {
        "codec": codec.name,
        "rate": format_rate(rate),
        "width": str(w),
        "height": str(h),
        "bytes": str(len(data)),
        "bpp": _fmt(8.0 * len(data) / (h * w), 6),
        "psnr": _fmt(psnr(image, out), 4),
        "psnr_float": _fmt(p_float, 4),
        "ms_ssim": _fmt(ms_ssim(image, out), 6),
        "ms_ssim_resized": "1" if ms_ssim_needs_resize(h, w) else "0",
        "lpips": _fmt(lpips_fn(image, out, convention="standard"), 6),
        "lpips_paper": _fmt(lpips_fn(image, out, convention="paper"), 6),
        "encode_ms": _fmt((t1 - t0) * 1e3, 2),
        "decode_ms": _fmt((t2 - t1) * 1e3, 2),
    }, out


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def read_rows(path: Path, columns: Sequence[str] = CSV_COLUMNS) -> list[dict[str, str]]:
    """Rows of an existing results CSV ([] if absent); a foreign header raises `TacoError`.

    A last line cut short by an interrupted run (no final newline) is removed from the file,
    so that appending continues on a fresh line; rows with missing cells are ignored.
    ``columns`` is the header expected (`csv_columns` of the caption policy).
    """
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(cut)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return []
        if tuple(reader.fieldnames) != tuple(columns):
            raise TacoError(f"{path} has other columns than this version writes; use another --out")
        return [r for r in reader if all(r.get(c) is not None for c in columns)]


def row_key(row: Mapping[str, str], caption_mode: str = "given") -> tuple[str, ...]:
    """Identity of a CSV row: (image, codec, rate), + the caption index under ``each``."""
    if caption_mode == "each":
        return row["image"], row["codec"], row["rate"], row[CAPTION_COLUMN]
    return row["image"], row["codec"], row["rate"]


def write_rows(path: Path, rows: Iterable[Mapping[str, str]],
               columns: Sequence[str] = CSV_COLUMNS) -> None:
    """Rewrite a results CSV with exactly ``rows`` (header included)."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({c: r[c] for c in columns} for r in rows)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# Provenance: which weights / encoder made the rows of an output folder
# --------------------------------------------------------------------------------------------

PROVENANCE_FILE = "provenance.json"


def codec_identity(codec: EvalCodec, rate: float) -> str:
    """What produces a (codec, rate) row: ``weights:<fingerprint>`` for a learned codec (the
    16-hex-digit weights fingerprint its bitstreams carry), ``pillow:<version>`` for a Pillow
    codec, else the codec's class name."""
    fingerprint = getattr(codec, "fingerprint", None)
    if callable(fingerprint):
        try:
            value = fingerprint(rate)
        except TacoError:
            value = None
        if isinstance(value, bytes):
            return "weights:" + value.hex()
    from app.codecs.classical import is_classical

    if is_classical(getattr(codec, "name", "")):
        import PIL

        return f"pillow:{PIL.__version__}"
    return f"class:{type(codec).__name__}"


def read_provenance(path: Path) -> dict[str, Any]:
    """``{"caption_mode": str | None, "rows": {"codec@rate": identity}}`` ({} if absent)."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; delete it or use another --out") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("rows", {}), dict):
        raise ConfigError(f"{path} is not a provenance file of this tool; use another --out")
    return raw


# --------------------------------------------------------------------------------------------
# Summary and BD-rate
# --------------------------------------------------------------------------------------------


def _float(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def summarize(rows: Iterable[Mapping[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Per codec, per rate: image count and the mean of every `MEAN_COLUMNS` column.

    Empty cells are skipped (mean over the images that have a value; None if none has).
    Points are sorted by mean bpp.
    """
    groups: dict[tuple[str, str], list[Mapping[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["codec"], row["rate"]), []).append(row)
    out: dict[str, list[dict[str, Any]]] = {}
    for (codec, rate), members in groups.items():
        point: dict[str, Any] = {"rate": rate, "n": len(members)}
        for col in MEAN_COLUMNS:
            vals = np.array([_float(r[col]) for r in members], dtype=np.float64)
            vals = vals[~np.isnan(vals)]
            point[col] = float(np.mean(vals)) if vals.size else None
        point["ms_ssim_resized"] = sum(r["ms_ssim_resized"] == "1" for r in members)
        out.setdefault(codec, []).append(point)
    for points in out.values():
        points.sort(key=lambda p: (p["bpp"], float(p["rate"])))
    return out


#: Columns compared at matched bpp (`matched_bpp`).
MATCHED_COLUMNS: tuple[str, ...] = ("psnr", "ms_ssim", "lpips")


def matched_bpp(summary: Mapping[str, list[dict[str, Any]]], anchor: str
                ) -> dict[str, list[dict[str, Any]]]:
    """Each codec's points against the anchor's curve read at the same bpp.

    For every point of every other codec: ``anchor_<col>`` is the anchor's quality at that bpp,
    interpolated by PCHIP over log-bpp between the anchor's measured points (None outside its bpp
    range: no extrapolation), and ``delta_<col>`` = codec − anchor. This is "TACO vs ELIC at
    matched bpp" point by point; the BD-rate is its average over a range.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    if anchor not in summary:
        return out
    curves: dict[str, PchipInterpolator | None] = {}  # col -> quality as a function of log bpp
    for col in MATCHED_COLUMNS:
        ref = sorted((a["bpp"], a[col]) for a in summary[anchor]
                     if a["bpp"] and a["bpp"] > 0 and a[col] is not None)
        xs = np.log([b for b, _ in ref])
        ok = xs.size >= 2 and np.all(np.diff(xs) > 0)
        curves[col] = PchipInterpolator(xs, [q for _, q in ref], extrapolate=False) if ok else None
    for codec, points in summary.items():
        if codec == anchor:
            continue
        rows = []
        for p in points:
            row: dict[str, Any] = {"rate": p["rate"], "bpp": p["bpp"]}
            for col in MATCHED_COLUMNS:
                curve = curves[col]
                value = None
                if curve is not None and p["bpp"] and p["bpp"] > 0:
                    lx = math.log(p["bpp"])
                    if curve.x[0] <= lx <= curve.x[-1]:
                        value = float(curve(lx))
                row[col] = p[col]
                row[f"anchor_{col}"] = value
                row[f"delta_{col}"] = None if value is None or p[col] is None else p[col] - value
            rows.append(row)
        out[codec] = rows
    return out


def _prepare_curve(rates: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(quality, log-rate) sorted by quality, equal qualities merged, non-finite points dropped."""
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.argsort(q, kind="stable")
    q, lr = q[order], np.log(r[order])
    uq = np.unique(q)
    lr = np.array([lr[q == v].mean() for v in uq])
    return uq, lr


def bd_rate(anchor_rates: Sequence[float], anchor_quality: Sequence[float],
            test_rates: Sequence[float], test_quality: Sequence[float],
            method: BdMethod = "pchip") -> float | None:
    """Bjøntegaard delta rate (%) of test vs anchor; None when the curves do not overlap.

    Quality must be higher-is-better (pass −LPIPS for LPIPS). Log-rate is fitted as a function
    of quality — PCHIP (default) or a least-squares cubic (``"cubic"``) — and the mean log-rate
    difference over the overlapping quality interval gives ``(exp(Δ) − 1)·100``.
    Needs ≥ 2 distinct points per curve for PCHIP, ≥ 4 for cubic.
    """
    qa, ra = _prepare_curve(anchor_rates, anchor_quality)
    qt, rt = _prepare_curve(test_rates, test_quality)
    need = 4 if method == "cubic" else 2
    if qa.size < need or qt.size < need:
        return None
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not hi > lo:
        return None
    if method == "pchip":
        ia = float(PchipInterpolator(qa, ra).integrate(lo, hi))
        it = float(PchipInterpolator(qt, rt).integrate(lo, hi))
    elif method == "cubic":
        pa = np.polyint(np.polyfit(qa, ra, 3))
        pt = np.polyint(np.polyfit(qt, rt, 3))
        ia = float(np.polyval(pa, hi) - np.polyval(pa, lo))
        it = float(np.polyval(pt, hi) - np.polyval(pt, lo))
    else:
        raise ConfigError(f"unknown BD-rate method {method!r}; use 'pchip' or 'cubic'")
    return float((math.exp((it - ia) / (hi - lo)) - 1.0) * 100.0)


def bd_rates(summary: Mapping[str, list[dict[str, Any]]], anchor: str,
             method: BdMethod = "pchip") -> dict[str, dict[str, float | None]]:
    """BD-rate of every codec against ``anchor`` for each metric in `BD_METRICS`."""
    out: dict[str, dict[str, float | None]] = {}
    if anchor not in summary:
        return out
    for metric, (col, sign) in BD_METRICS.items():
        def curve(points: list[dict[str, Any]], col: str = col, sign: float = sign
                  ) -> tuple[list[float], list[float]]:
            pts = [p for p in points if p["bpp"] is not None and p[col] is not None]
            return [p["bpp"] for p in pts], [sign * p[col] for p in pts]

        ar, aq = curve(summary[anchor])
        out[metric] = {}
        for codec, points in summary.items():
            if codec == anchor:
                continue
            tr, tq = curve(points)
            out[metric][codec] = bd_rate(ar, aq, tr, tq, method)
    return out


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def markdown_tables(summary: Mapping[str, list[dict[str, Any]]],
                    bd: Mapping[str, Mapping[str, float | None]], anchor: str,
                    method: BdMethod, caption_mode: str | None = None) -> str:
    """The mean table and the BD-rate table as markdown (each headed by its caption policy)."""
    policy = f" (captions: {caption_mode})" if caption_mode else ""
    lines = [
        f"Means per codec and rate{policy}:",
        "",
        "| codec | rate | n | bpp | PSNR (dB) | PSNR float (dB) | MS-SSIM | LPIPS | LPIPS (paper conv.) | enc ms | dec ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for codec, points in summary.items():
        for p in points:
            lines.append(
                f"| {codec} | {p['rate']} | {p['n']} | {_cell(p['bpp'], 3)} | {_cell(p['psnr'], 2)} | "
                f"{_cell(p['psnr_float'], 2)} | {_cell(p['ms_ssim'], 4)} | {_cell(p['lpips'], 4)} | "
                f"{_cell(p['lpips_paper'], 4)} | {_cell(p['encode_ms'], 1)} | {_cell(p['decode_ms'], 1)} |"
            )
    lines += ["", f"BD-rate against **{anchor}**{policy} ({method}; negative = fewer bits at equal "
              "quality):", "",
              "| codec | BD-rate PSNR | BD-rate MS-SSIM | BD-rate LPIPS |", "|---|---:|---:|---:|"]
    codecs = [c for c in summary if c != anchor]
    for codec in codecs:
        cells = []
        for metric in BD_METRICS:
            v = bd.get(metric, {}).get(codec)
            cells.append("n/a (no overlap)" if v is None else f"{v:+.1f} %")
        lines.append(f"| {codec} | " + " | ".join(cells) + " |")
    if not codecs:
        lines.append("| (only the anchor was evaluated) | | | |")
    matched = matched_bpp(summary, anchor)
    if any(matched.values()):
        lines += ["", f"At matched bpp{policy}: **{anchor}** read at each point's bpp (PCHIP over log bpp; "
                  f"– outside {anchor}'s measured range):", "",
                  f"| codec | rate | bpp | PSNR | {anchor} PSNR | ΔPSNR dB | LPIPS | {anchor} LPIPS | ΔLPIPS |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for codec, rows in matched.items():
            for r in rows:
                lines.append(
                    f"| {codec} | {r['rate']} | {_cell(r['bpp'], 3)} | {_cell(r['psnr'], 2)} | "
                    f"{_cell(r['anchor_psnr'], 2)} | {_signed(r['delta_psnr'], 2)} | {_cell(r['lpips'], 4)} | "
                    f"{_cell(r['anchor_lpips'], 4)} | {_signed(r['delta_lpips'], 4)} |")
    return "\n".join(lines) + "\n"


def realism_table(summary: Mapping[str, list[dict[str, Any]]], caption_mode: str, note: str,
                  computed: bool, samples: str) -> str:
    """The FID / KID table, or one line saying why there is none."""
    if not computed:
        return f"\nFID / KID: not computed: {note}.\n"
    lines = ["", f"Realism against the originals (captions: {caption_mode}; {note}; {samples}; "
             "lower is better; KID ×1000, mean ± std over subsets):", "",
             "| codec | rate | bpp | FID | KID ×1000 |", "|---|---:|---:|---:|---:|"]
    for codec, points in summary.items():
        for p in points:
            kid = "–" if p.get("kid") is None else f"{p['kid'] * 1e3:.2f} ± {p['kid_std'] * 1e3:.2f}"
            fid = _cell(p.get("fid"), 2)
            if p.get("fid_missing"):
                fid = f"– ({p['fid_missing']} rows without features)"
            lines.append(f"| {codec} | {p['rate']} | {_cell(p['bpp'], 3)} | {fid} | {kid} |")
    return "\n".join(lines) + "\n"


def _signed(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


_PLOT_PANELS: tuple[tuple[str, str], ...] = (
    ("psnr", "PSNR (dB, 8-bit) ↑"),
    ("ms_ssim", "MS-SSIM ↑"),
    ("lpips", "LPIPS-alex (standard) ↓"),
)


def write_plotly(summary: Mapping[str, list[dict[str, Any]]], path: Path, title: str,
                 include_plotlyjs: bool | str = True) -> Path:
    """RD curves (bpp vs PSNR, MS-SSIM, LPIPS) as one plotly HTML file.

    ``include_plotlyjs=True`` embeds plotly.js (≈ 4.8 MB, works offline); ``"directory"``
    writes ``plotly.min.js`` beside it; ``"cdn"`` needs the internet to view.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(_PLOT_PANELS), subplot_titles=[t for _, t in _PLOT_PANELS])
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    for i, (codec, points) in enumerate(summary.items()):
        color = palette[i % len(palette)]
        for j, (col, _) in enumerate(_PLOT_PANELS):
            pts = [p for p in points if p["bpp"] is not None and p[col] is not None]
            fig.add_trace(
                go.Scatter(
                    x=[p["bpp"] for p in pts], y=[p[col] for p in pts], mode="lines+markers",
                    name=codec, legendgroup=codec, showlegend=(j == 0), line={"color": color},
                    text=[f"{codec} rate {p['rate']}" for p in pts],
                    hovertemplate="%{text}<br>bpp %{x:.3f}<br>%{y:.4f}<extra></extra>",
                ),
                row=1, col=j + 1,
            )
            fig.update_xaxes(title_text="bpp", row=1, col=j + 1)
    fig.update_layout(title=title, height=450, width=1400, template="plotly_white")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=include_plotlyjs, full_html=True)
    return path


def write_png(summary: Mapping[str, list[dict[str, Any]]], path: Path, title: str) -> Path | None:
    """The same RD curves as a PNG via matplotlib (Agg, offline); None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(_PLOT_PANELS), figsize=(15, 4.2))
    for codec, points in summary.items():
        for ax, (col, _) in zip(axes, _PLOT_PANELS, strict=True):
            pts = [p for p in points if p["bpp"] is not None and p[col] is not None]
            ax.plot([p["bpp"] for p in pts], [p[col] for p in pts], marker="o", label=codec)
    for ax, (_, label) in zip(axes, _PLOT_PANELS, strict=True):
        ax.set_xlabel("bpp")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats (PSNR ∞ of a lossless file) by strings JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else None)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class EvalResult:
    """What `run_eval` produced."""

    out_dir: Path
    csv_path: Path
    summary_path: Path
    report_path: Path
    plot_paths: list[Path] = field(default_factory=list)
    computed: int = 0
    skipped: int = 0
    #: codec name -> number of reused rows dropped because its weights/encoder changed
    stale: dict[str, int] = field(default_factory=dict)
    summary: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bd: dict[str, dict[str, float | None]] = field(default_factory=dict)


def run_eval(
    images: Path,
    codecs: Sequence[str],
    out_dir: Path,
    rates: Mapping[str, Sequence[float] | None] | None = None,
    captions: Path | None = None,
    anchor: str | None = None,
    limit: int | None = None,
    bd_method: BdMethod = "pchip",
    plotlyjs: bool | str = True,
    progress: bool = True,
    command: str | None = None,
    caption_mode: str = "given",
    select_by: str = "lpips",
    dist: eval_dist.DistInfo | None = None,
    realism: Realism | None = None,
    device: str = "cpu",
) -> EvalResult:
    """Evaluate ``codecs`` on the images of ``images``; write CSV, JSON, markdown and plots.

    ``rates[codec]`` lists λ (learned) or quality (classical); missing/None → `default_rates`.
    Rows already in ``out_dir/results.csv`` are reused, not recomputed. Summary, report and
    plots cover exactly the requested (image, codec, rate) set.

    ``caption_mode`` is a policy of `app.eval_captions` (``given``, ``each``, ``best-of``,
    ``empty``, ``other``); ``select_by`` is the column ``best-of`` minimises. Use a separate
    ``out_dir`` per mode.

    ``dist`` (from `app.eval_dist.init`) shards the work: every rank measures its share of the
    units into its own file under ``out_dir/shards/``; rank 0 then merges them into
    results.csv and writes summary, report and plots. Every rank must call this with the same
    arguments; ranks other than 0 return a result without summary. A shard file left by a killed
    run is folded into results.csv at the next start, so any number of ranks can resume it.

    ``realism`` (`app.realism.resolve`) adds FID and KID of each (codec, rate) against the
    originals: features of every measured row go to ``out_dir/features/``; without it the report
    says in one line why there is no FID.
    """
    from app import eval_units as eu
    from app import realism as realism_mod

    info = dist or eval_dist.DistInfo()
    realism = realism or realism_mod.Realism.off("not requested")
    plan = eu.make_plan(images, codecs, rates, captions, limit, caption_mode, select_by, device)
    names = plan.names
    anchor = (anchor or ("jpeg" if "jpeg" in names else names[0])).lower()
    if anchor not in names:
        raise ConfigError(f"anchor {anchor!r} is not among the evaluated codecs")
    columns = plan.columns
    csv_path = out_dir / "results.csv"
    prov_path = out_dir / PROVENANCE_FILE
    result = EvalResult(out_dir, csv_path, out_dir / "summary.json", out_dir / "report.md")
    identity = {f"{n}@{format_rate(r)}": codec_identity(plan.codecs[n], r)
                for n in names for r in plan.rates[n]}
    units = plan.units()
    order = {u.key(): i for i, u in enumerate(units)}

    if info.main:  # one process prepares the folder while the others wait at the barrier
        # (if it fails, it exits and the launcher stops the other ranks)
        out_dir.mkdir(parents=True, exist_ok=True)
        prior = read_provenance(prov_path)
        if prior.get("caption_mode") not in (None, caption_mode) and (
                csv_path.exists() or eu.shard_files(out_dir)):
            raise ConfigError(f"{out_dir} holds caption-mode {prior['caption_mode']!r} results; "
                              f"use another --out for caption mode {caption_mode!r}")
        made_by = {**prior.get("rows", {})}

        def fresh(r: dict[str, str]) -> bool:
            key = f"{r['codec']}@{r['rate']}"
            if key in identity and made_by.get(key, identity[key]) != identity[key]:
                result.stale[r["codec"]] = result.stale.get(r["codec"], 0) + 1
                return False  # made by other weights / another encoder version: measure again
            return True

        eu.fold_shards(out_dir, columns, caption_mode, fresh, order)
        made_by.update(identity)
        prov_path.write_text(json.dumps({"caption_mode": caption_mode, "rows": made_by},
                                        indent=2, sort_keys=True) + "\n", encoding="utf-8")
    eval_dist.barrier(info)

    existing = read_rows(csv_path, columns)  # rank 0 already repaired it; nobody writes it now
    done = {row_key(r, caption_mode) for r in existing}
    mine = eval_dist.shard(units, info.rank, info.world)
    todo = [u for u in mine if u.key() not in done]
    target = csv_path
    if info.enabled:
        target = eu.shard_path(out_dir, info.rank)
        target.parent.mkdir(parents=True, exist_ok=True)
    store = realism_mod.FeatureStore(out_dir / realism_mod.FEATURE_DIR, realism)
    on_row: eu.RowHook | None = None
    if realism.enabled:
        def on_row(u: eu.Unit, row: dict[str, str], original: np.ndarray, decoded: np.ndarray) -> None:
            store.add(u.codec, u.rate, u.image, u.caption, original, decoded)
    new_rows = eu.compute_units(plan, todo, target, progress=progress, on_row=on_row)
    result.computed = len(new_rows)
    result.skipped = len(mine) - len(todo)
    eval_dist.barrier(info)
    if not info.main:
        return result

    if info.enabled:
        existing, added = eu.fold_shards(out_dir, columns, caption_mode, order=order)
        result.computed = added
        result.skipped = len(units) - added
    else:
        existing = existing + new_rows
    by_key = {row_key(r, caption_mode): r for r in existing}
    missing = [u.key() for u in units if u.key() not in by_key]
    if missing:
        raise TacoError(f"{len(missing)} rows missing after the run (first: {missing[0]}); run again")
    rows = [by_key[u.key()] for u in units]
    points = None
    if realism.enabled:
        points = realism_mod.summarize(store, rows, [f.name for f in plan.files],
                                       CAPTION_COLUMN if caption_mode == "each" else None)
    write_outputs(result, plan, rows, images=images, captions=captions, anchor=anchor,
                  bd_method=bd_method, plotlyjs=plotlyjs, command=command,
                  realism_note=realism.note, realism_points=points, realism_patch=realism.patch)
    return result


def write_outputs(result: EvalResult, plan: EvalPlan, rows: Sequence[Mapping[str, str]], *,
                  images: Path, captions: Path | None, anchor: str, bd_method: BdMethod,
                  plotlyjs: bool | str, command: str | None,
                  realism_note: str = "not requested",
                  realism_points: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
                  realism_patch: int = 0) -> None:
    """summary.json, report.md and the plots of ``rows`` (the rows of the plan, in unit order).

    ``realism_points`` ({codec: {rate: {fid, kid, kid_std, ...}}}, `app.realism.summarize`) adds
    ``fid`` / ``kid`` / ``kid_std`` to each summary point and a realism table to the report;
    without it the report says ``realism_note`` (why there is no FID) in one line.
    """
    names, files, caption_mode = plan.names, plan.files, plan.caption_mode
    summary = summarize(rows)
    result.summary = {n: summary[n] for n in names if n in summary}
    if realism_points is not None:
        for codec, pts in result.summary.items():
            for p in pts:
                got = realism_points.get(codec, {}).get(p["rate"], {})
                for k in ("fid", "kid", "kid_std"):
                    p[k] = got.get(k)
                p["fid_samples"] = got.get("samples")  # [originals, reconstructions]
                if got.get("missing"):
                    p["fid_missing"] = got["missing"]
    result.bd = bd_rates(result.summary, anchor, bd_method)
    payload = {
        "images": len(files),
        "rows": len(rows),
        "image_dir": str(images),
        "captions": str(captions) if captions else None,
        "caption_mode": caption_mode,
        "caption_policy": eval_captions.DESCRIPTIONS[caption_mode],
        **({"best_of_select_by": plan.select_by} if caption_mode == "best-of" else {}),
        "anchor": anchor,
        "bd_method": bd_method,
        "command": command,
        "conventions": {
            "bpp": "8*bytes/(H*W) of the original image, real encoded bytes",
            "psnr": "8-bit RGB, peak 255, mean of per-image dB",
            "psnr_float": "[0,1], unclamped x_hat (= psnr for 8-bit codecs); null if unavailable",
            "ms_ssim": "pytorch-msssim data_range=1 (shorter side <=160 px: both resized to 256)",
            "lpips": "LPIPS-alex v0.1, inputs scaled to [-1,1] (standard)",
            "lpips_paper": "LPIPS-alex v0.1, [0,1] inputs unscaled (TACO paper convention)",
        },
        "codecs": result.summary,
        "bd_rate": result.bd,
        "matched_bpp": matched_bpp(result.summary, anchor),
        "realism": {
            "computed": realism_points is not None,
            "note": realism_note,
            "samples": "whole images resized to 299 by torch-fidelity" if realism_patch <= 0
                       else f"non-overlapping {realism_patch}x{realism_patch} crops",
            "reference": "the original images of the run",
        },
    }
    result.summary_path.write_text(json.dumps(_json_safe(payload), indent=2) + "\n", encoding="utf-8")

    title = f"RD curves on {images.name} ({len(files)} images, captions: {caption_mode})"
    report = [f"# Evaluation: {images.name} ({len(files)} images)", ""]
    if command:
        report += ["```", command, "```", ""]
    policy = f"{caption_mode}: {eval_captions.DESCRIPTIONS[caption_mode]}"
    if caption_mode == "best-of":
        policy += f" (selected by {plan.select_by})"
    report += [f"Caption policy of every table below: **{policy}**; {len(rows)} rows.", ""]
    report.append(markdown_tables(result.summary, result.bd, anchor, bd_method,
                                  caption_mode=caption_mode))
    report.append(realism_table(result.summary, caption_mode, realism_note, realism_points is not None,
                                payload["realism"]["samples"]))
    result.report_path.write_text("\n".join(report), encoding="utf-8")
    out_dir = result.out_dir
    result.plot_paths.append(write_plotly(result.summary, out_dir / "rd_plots.html", title, plotlyjs))
    png = write_png(result.summary, out_dir / "rd_plots.png", title)
    if png is not None:
        result.plot_paths.append(png)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

_EPILOG = """\
default rates:
  jpeg  quality {jpeg}
  webp  quality {webp}
  avif  quality {avif}
  learned codecs (taco, elic, ...): λ values — the codec's rate_ladder (fixed-rate families),
        else {n} log-spaced λ over its rate_range

--rates examples:  --rates 30,50,70   (all codecs)   --rates jpeg=10,50 --rates taco=0.0008,0.004
outputs in --out:  results.csv, summary.json, report.md, rd_plots.html, rd_plots.png
sharded:  torchrun --nproc_per_node N -m app eval ... (each rank measures every N-th row into
          --out/shards/, rank 0 merges them; --out must be on a filesystem all ranks share)
re-running with the same --out skips (image, codec, rate) rows already in results.csv,
unless provenance.json shows they were made by other weights (then they are measured again).
""".format(
    n=LEARNED_DEFAULT_POINTS,
    **{k: ",".join(f"{v:g}" for v in vs) for k, vs in DEFAULT_CLASSICAL_RATES.items()},
)


def setup_args(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the ``eval`` options to ``parser`` (a new parser when None) and return it."""
    if parser is None:
        parser = argparse.ArgumentParser(prog="python -m app eval")
    parser.description = "Rate-distortion evaluation of codecs on a folder of images."
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--images", type=Path, required=True, help="folder of images (sorted by name)")
    parser.add_argument("--captions", type=Path, default=None,
                        help="JSON: file name -> caption or list of captions (--caption-mode says which are used)")
    parser.add_argument("--codecs", default="jpeg,webp,avif",
                        help="comma-separated: jpeg, webp, avif, taco, elic, ... (default: %(default)s)")
    parser.add_argument("--rates", action="append", default=None, metavar="[CODEC=]R1,R2,...",
                        help="rates: λ for learned codecs, quality 1-100 for classical (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--anchor", default=None, help="BD-rate anchor codec (default: jpeg if listed)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--bd-method", choices=["pchip", "cubic"], default="pchip",
                        help="BD-rate interpolation (default: %(default)s)")
    parser.add_argument("--plotlyjs", choices=["inline", "directory", "cdn"], default="inline",
                        help="how rd_plots.html gets plotly.js (inline: self-contained, ~4.8 MB)")
    parser.add_argument(
        "--caption-mode", choices=CAPTION_MODES, default="given",
        help="caption policy: given = each image's first caption; each = every caption, one row "
             "per caption; best-of = encode with every caption and keep the reconstruction with "
             "the lowest LPIPS against the original (what the official COCO-30k script meant: "
             "its released version starts the best LPIPS at 0.0, so it never selects and its "
             "averages use the last caption); empty = no caption; other = the next image's "
             "caption (mismatched). Use one --out per policy")
    parser.add_argument("--best-of-by", choices=eval_captions.SELECT_COLUMNS, default="lpips",
                        help="the LPIPS best-of minimises: lpips (standard, the headline) or "
                             "lpips_paper ([0,1] inputs, the official scripts' convention)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu: gloo process group under torchrun; cuda: NCCL, each rank "
                             "pinned to GPU LOCAL_RANK, where its learned codecs and FID's "
                             "Inception run (files stay portable: they decode the same on CPU)")
    parser.add_argument("--inception-weights", type=Path, default=None, metavar="PATH",
                        help="torch-fidelity Inception weights for FID/KID (default: its file in "
                             "the torch hub cache, if there; never downloaded)")
    parser.add_argument("--no-fid", action="store_true", help="no FID/KID even if weights are found")
    parser.add_argument("--fid-patch", type=int, default=0, metavar="P",
                        help="FID/KID samples: 0 = whole images (resized to 299), P = "
                             "non-overlapping PxP crops (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return parser


def run_from_args(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run ``eval`` from parsed arguments; prints the outputs; returns the exit code.

    Under torchrun every rank runs this; rank 0 prints the report, the others one line each.
    """
    from app import realism

    codecs = [c.strip().lower() for c in args.codecs.split(",") if c.strip()]
    plotlyjs: bool | str = True if args.plotlyjs == "inline" else args.plotlyjs
    command = None
    if argv is not None:
        command = "python -m app eval " + " ".join(shlex.quote(a) for a in argv)
    try:
        info = eval_dist.init(args.device)
    except TacoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command is not None and info.enabled:
        command = command.replace("python -m app eval", f"torchrun ({info.world} ranks) -m app eval", 1)
    try:
        real = realism.resolve(args.inception_weights, not args.no_fid, args.device, args.fid_patch)
        result = run_eval(
            args.images, codecs, args.out, rates=parse_rates(args.rates, codecs),
            captions=args.captions, anchor=args.anchor, limit=args.limit,
            bd_method=args.bd_method, plotlyjs=plotlyjs,
            progress=not args.no_progress and info.main,
            command=command, caption_mode=args.caption_mode, select_by=args.best_of_by, dist=info,
            realism=real, device=args.device,
        )
    except TacoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2  # the CLI's exit code for user errors
    finally:
        eval_dist.finish(info)
    if not info.main:
        print(f"rank {info.rank}: {result.computed} measured, {result.skipped} reused")
        return 0
    for name, n in result.stale.items():
        print(f"{name}: weights or encoder changed since {result.csv_path} was written; "
              f"{n} old rows measured again")
    print(f"{result.computed} measured, {result.skipped} reused from {result.csv_path}")
    print(result.report_path.read_text(encoding="utf-8"))
    for path in [result.csv_path, result.summary_path, result.report_path, *result.plot_paths]:
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app eval …``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = setup_args().parse_args(argv)
    return run_from_args(args, argv)


if __name__ == "__main__":
    sys.exit(main())
