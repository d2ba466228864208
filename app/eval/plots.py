"""RD plots of an evaluation: ``rd_plots.html`` (plotly) and ``rd_plots.png`` (matplotlib).

Both draw bpp against PSNR, MS-SSIM and LPIPS, each codec in its family's colour
(`app.display.colour`), the colours of the demo's own RD plot.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.display import colour

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
    for codec, points in summary.items():
        color = colour(codec)
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
            ax.plot([p["bpp"] for p in pts], [p[col] for p in pts], marker="o", label=codec,
                    color=colour(codec))
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
