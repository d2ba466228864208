"""The Gradio demo, in three layers (each module imports only those of the layers below):

* service (no Gradio; numpy / Pillow, the package imported lazily through the backend):
  `backend` (the package behind an injectable `Backend`), `model_sets`, `rate` (slider ↔ λ),
  `cache`, `runs` (one codec on the image, through `app.measure`), `compare` (the comparison),
  `caption_effect`, `attention_tab`, `captions` (token counter, auto-caption), `decode_tab`,
  `references`
  (RD curves), `examples`, `defaults`;
* presentation: `present` (tables, HTML, error maps, downloads), `plots` (plotly figures),
  `zoom` (crops), `theme` (CSS, theme, texts);
* Gradio: `events` (the callbacks, and the comparison request by name), `tabs` (the secondary
  tabs' components) and `layout` (the page and its wiring).

Importing `app.ui` is cheap; torch and the models load on the first request.
"""

from __future__ import annotations

__all__ = ["build_demo"]


def build_demo(*args, **kwargs):
    """Shortcut for :func:`app.ui.layout.build_demo` (imports Gradio on first use)."""
    from app.ui.layout import build_demo as _build

    return _build(*args, **kwargs)
