"""Presenting a comparison: tables, HTML cards, error maps, downloadable files."""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.display import fmt
from app.ui.cache import image_digest
from app.ui.compare import CompareResult
from app.ui.runs import CodecRun

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


log = logging.getLogger(__name__)


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


def metrics_rows(runs: Iterable[CodecRun]) -> list[list[str | int]]:
    """Table rows (strings, formatted for display; bytes as int)."""
    rows: list[list[str | int]] = []
    for r in runs:
        rows.append(
            [
                r.label,
                r.setting,
                r.n_bytes,
                fmt(r.bpp, 4),
                fmt(r.psnr, 2),
                fmt(r.ms_ssim, 4),
                fmt(r.lpips, 4),
                fmt(r.encode_ms, 0),
                fmt(r.decode_ms, 0),
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
        f"TACO {taco.bpp:.3f} bpp ({taco.n_bytes:,} bytes) · "
        + (result.pending or f"done in {result.total_ms / 1e3:.1f} s"),
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


def prune_downloads(folder: Path, max_age_s: float) -> None:
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


#: zlib level of the PNG files the page shows: a 768×512 photo takes 28 ms at level 1 against
#: 100 ms at Pillow's default 6, for a file 0.1 % larger (kodim14: 723 against 724 kB).
PNG_LEVEL = 1


def png_files(*images: np.ndarray, out_dir: Path | None = None) -> tuple[str, ...]:
    """The images as lossless PNG files for Gradio (which would encode arrays at level 6 itself).

    Named by content, so an image already written (the same reconstruction in another view)
    is not encoded again; kept with the downloads and pruned with them.
    """
    from PIL import Image

    base = out_dir or DOWNLOAD_DIR
    folder = base / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for img in images:
        arr = np.ascontiguousarray(img, dtype=np.uint8)
        p = folder / f"{image_digest(arr)[:24]}.png"
        if not p.is_file():
            tmp = p.with_suffix(f".{threading.get_ident()}.tmp")
            Image.fromarray(arr).save(tmp, format="PNG", compress_level=PNG_LEVEL)
            tmp.replace(p)  # atomic: a concurrent reader never sees half a file
        paths.append(str(p))
    return tuple(paths)


def write_bitstreams(
    result: CompareResult, out_dir: Path | None = None, rows: Sequence[str] = ("taco", "elic")
) -> dict[str, Path]:
    """Write the `.taco` files of the learned codecs; returns row id → path."""
    base = out_dir or DOWNLOAD_DIR
    if out_dir is None:
        prune_downloads(base, DOWNLOAD_MAX_AGE_S)
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
