"""Summary maths: per-point means, BD-rates and the comparison at matched bpp.

Summary (`summarize`): per codec and rate the mean of each column over the images — PSNR is
averaged per image in dB, not from a mean MSE.

BD-rate (`bd_rate`): Bjøntegaard delta rate of a test codec against an anchor, computed on the
per-codec curves of mean bpp vs mean quality. Log-rate is interpolated as a function of quality
and integrated over the *overlapping* quality interval; the result is
``(exp(mean Δlog-rate) − 1)·100`` %, negative = fewer bits than the anchor at equal quality.
Default interpolation: **piecewise cubic Hermite (PCHIP, Fritsch–Carlson monotone slopes)**,
``scipy.interpolate.PchipInterpolator``, integrated exactly (its ``integrate``), as in the newer
VCEG/JVET reference sheets; ``"cubic"`` uses the original VCEG-M33 least-squares cubic
polynomial (needs ≥ 4 points). Quality is PSNR (dB), MS-SSIM, and −LPIPS (LPIPS is
lower-is-better, so its negation is used as quality).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy.interpolate import PchipInterpolator

from app.errors import ConfigError
from app.eval.schema import Row

#: Columns averaged in the summary.
MEAN_COLUMNS: tuple[str, ...] = (
    "bpp", "psnr", "psnr_float", "ms_ssim", "lpips", "lpips_paper", "encode_ms", "decode_ms",
)

BdMethod = Literal["pchip", "cubic"]
#: Quality metrics that get a BD-rate table: name -> (summary column, sign so higher is better).
BD_METRICS: dict[str, tuple[str, float]] = {
    "psnr": ("psnr", 1.0),
    "ms_ssim": ("ms_ssim", 1.0),
    "lpips": ("lpips", -1.0),
}


def summarize(rows: Iterable[Row]) -> dict[str, list[dict[str, Any]]]:
    """Per codec, per rate: image count and the mean of every `MEAN_COLUMNS` column.

    Missing values are skipped (mean over the images that have a value; None if none has).
    Points are sorted by mean bpp.
    """
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.codec, row.rate_key), []).append(row)
    out: dict[str, list[dict[str, Any]]] = {}
    for (codec, rate), members in groups.items():
        point: dict[str, Any] = {"rate": rate, "n": len(members)}
        for col in MEAN_COLUMNS:
            vals = np.array([math.nan if (v := getattr(r, col)) is None else v for r in members],
                            dtype=np.float64)
            vals = vals[~np.isnan(vals)]
            point[col] = float(np.mean(vals)) if vals.size else None
        point["ms_ssim_resized"] = sum(r.ms_ssim_resized for r in members)
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
