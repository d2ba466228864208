"""The Gradio demo: `handlers` (pure, typed logic), `plots` (plotly figures), `layout` (wiring).

Importing `app.ui` is cheap; `app.ui.layout` imports Gradio, `app.ui.handlers` only numpy/Pillow
(torch and the models load on the first request, through `app.codecs`).
"""

from __future__ import annotations

__all__ = ["build_demo"]


def build_demo(*args, **kwargs):
    """Shortcut for :func:`app.ui.layout.build_demo` (imports Gradio on first use)."""
    from app.ui.layout import build_demo as _build

    return _build(*args, **kwargs)
