"""Plotly figures for the demo (pure functions: data in, `go.Figure` out)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.display import PUBLISHED_COLOUR
from app.display import colour as _colour
from app.ui.references import RDPoint, RefCurve

MARKERS: dict[str, str] = {
    "taco": "star",
    "elic": "circle",
    "elic@bpp": "circle-open",
    "jpeg@bpp": "square",
    "webp@bpp": "diamond",
    "avif@bpp": "triangle-up",
}
FONT = dict(family="Inter, system-ui, sans-serif", size=15)


def rd_figure(
    points: Sequence[RDPoint],
    references: Sequence[RefCurve] = (),
    lpips_convention: str = "standard",
    title: str | None = None,
) -> go.Figure:
    """bpp–PSNR and bpp–LPIPS side by side: this image's points over reference curves."""
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=(
            "PSNR (dB) vs bpp: higher is better",
            f"LPIPS ({'paper convention' if lpips_convention == 'paper' else 'standard'}) vs bpp: "
            "lower is better",
        ),
    )
    legend_seen: set[str] = set()

    for ref in references:
        colour = PUBLISHED_COLOUR if ref.published else _colour(ref.name)
        dash = "dot" if ref.published else ("dash" if "official" in ref.name.lower() else "solid")
        label = f"{ref.name} ({ref.dataset}{', published' if ref.published else ''})"
        hover = f"{label}<br>{ref.source}<br>bpp %{{x:.3f}}<br>%{{y:.4f}}<extra></extra>"
        for col, ys, ok in (
            (1, ref.psnr, bool(ref.psnr)),
            (2, ref.lpips, bool(ref.lpips) and ref.lpips_convention == lpips_convention),
        ):
            if not ok:
                continue
            pairs = [(b, y) for b, y in zip(ref.bpp, ys, strict=False) if y is not None]
            if not pairs:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pairs],
                    y=[p[1] for p in pairs],
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=label not in legend_seen,
                    line=dict(color=colour, width=2, dash=dash),
                    marker=dict(size=5, color=colour),
                    opacity=0.75,
                    hovertemplate=hover,
                ),
                row=1,
                col=col,
            )
            legend_seen.add(label)

    for p in points:
        colour = _colour(p.row_id)
        symbol = MARKERS.get(p.row_id, "circle")
        label = f"{p.label} (this image)"
        for col, y in ((1, p.psnr), (2, p.lpips)):
            if y is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[p.bpp],
                    y=[y],
                    mode="markers",
                    name=label,
                    legendgroup=label,
                    showlegend=label not in legend_seen,
                    marker=dict(
                        size=16 if p.row_id == "taco" else 12,
                        color=colour,
                        symbol=symbol,
                        line=dict(width=2, color=colour if "open" in symbol else "white"),
                    ),
                    hovertemplate=f"{p.label}<br>bpp %{{x:.4f}}<br>%{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            legend_seen.add(label)

    fig.update_xaxes(title_text="bits per pixel (real file bytes)", rangemode="tozero")
    fig.update_yaxes(title_text="PSNR (dB)", row=1, col=1)
    fig.update_yaxes(title_text="LPIPS", row=1, col=2, rangemode="tozero")
    fig.update_layout(
        title=title,
        template="plotly_white",
        font=FONT,
        height=460,
        margin=dict(l=60, r=20, t=60 if title is None else 90, b=60),
        legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0),
        hoverlabel=dict(font_size=14),
    )
    if not points and not references:
        fig.add_annotation(
            text="Run a comparison to see this image's points",
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
            showarrow=False,
            font=dict(size=18, color="#666"),
        )
    return fig


def empty_figure() -> go.Figure:
    return rd_figure([], [])
