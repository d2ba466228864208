"""How the demo looks: its CSS, its Gradio theme, the Markdown texts, and `launch()` arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from app.settings import get_settings

UI_DIR = Path(__file__).resolve().parent

CSS = """
.gradio-container {max-width: 1480px !important; margin: auto;}
#taco-title h1 {font-size: 2.0rem; margin-bottom: 0.1rem;}
#taco-title p {font-size: 1.05rem; margin-top: 0.2rem; color: var(--body-text-color);}
.taco-badges span {display: inline-block; padding: 2px 10px; margin: 2px 6px 2px 0;
  border-radius: 999px; font-size: 0.9rem; font-weight: 600;
  background: var(--color-accent-soft); color: var(--body-text-color);}
#taco-compare-btn {font-size: 1.15rem; min-height: 52px;}
#taco-status {font-size: 1.0rem;}
#taco-status p {margin: 0.15rem 0;}
#taco-metrics, #taco-cap-table {--font-mono: var(--font);}
#taco-metrics td, #taco-metrics th, #taco-cap-table td, #taco-cap-table th {font-size: 0.98rem;}
#taco-examples .gallery-item img {width: 92px; height: 62px; object-fit: cover;}
#taco-view {margin-bottom: -6px;}
.taco-sides {display: flex; justify-content: space-between; font-weight: 700;
  font-size: 1.05rem; padding: 0 6px;}
.taco-side-left, .taco-side-right {color: var(--body-text-color);}
#taco-metrics td:first-child, #taco-metrics th:first-child {font-weight: 700;}
.taco-small p {font-size: 0.9rem; margin: 0.1rem 0; color: var(--body-text-color-subdued);}
.taco-colorbar {max-width: 560px; margin: 4px 0 8px 0;}
.taco-colorbar-bar {height: 16px; border-radius: 4px; border: 1px solid #8884;}
.taco-colorbar-ticks {display: flex; justify-content: space-between; font-size: 0.9rem;}
.taco-err-means {font-size: 1.0rem; margin: 10px 0; line-height: 1.6;}
.taco-colorbar-label {font-size: 0.85rem; color: var(--body-text-color-subdued);}
#taco-footer p {font-size: 0.85rem; color: var(--body-text-color-subdued);}
"""


def make_theme() -> gr.themes.Base:
    theme = gr.themes.Soft(
        primary_hue=gr.themes.colors.red,
        secondary_hue=gr.themes.colors.blue,
        neutral_hue=gr.themes.colors.slate,
        text_size=gr.themes.sizes.text_lg,
        font=[gr.themes.GoogleFont("Inter"), "system-ui", "sans-serif"]
        if get_settings().ui_webfonts
        else ["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
    )
    # Neutral block labels (the red pills of the default theme compete with the images).
    return theme.set(
        block_label_background_fill="*neutral_100",
        block_label_text_color="*neutral_700",
        block_title_text_color="*neutral_800",
        block_label_text_weight="600",
    )


def launch_kwargs() -> dict[str, Any]:
    """Keyword arguments for `demo.launch()` (theme and CSS are launch() parameters in Gradio 6)."""
    # Uploads are bounded before they reach disk; prepare_image refuses > 64 MB files anyway.
    return {"theme": make_theme(), "css": CSS, "max_file_size": "64mb"}


def markdown(name: str) -> str:
    """A Markdown text shipped beside this module ("" when absent)."""
    p = UI_DIR / name
    return p.read_text(encoding="utf-8") if p.is_file() else ""
