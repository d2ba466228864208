"""The demo's secondary tabs (caption effect, caption attention, zoom): their components.

Each builder runs inside the page's `gr.Tabs` and returns its components by name, so that
`app.ui.layout` wires them like the others.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.ui.attention_tab import ATTENTION_NOTE
from app.ui.caption_effect import CAPTION_COLUMNS, CAPTION_EFFECT_NOTE, CAPTION_VIEWS
from app.ui.defaults import DEFAULT_SECOND_CAPTION
from app.ui.present import side_labels_html


def build_secondary_tabs() -> dict[str, Any]:
    """The caption-effect, caption-attention and zoom tabs (call inside ``gr.Tabs``)."""
    with gr.Tab("Caption effect", id="caption"):
        gr.Markdown(CAPTION_EFFECT_NOTE)
        with gr.Row():
            with gr.Column(scale=4, min_width=320):
                second_caption = gr.Textbox(
                    label="Second caption (e.g. a wrong one)",
                    value=DEFAULT_SECOND_CAPTION,
                    lines=2,
                )
                gr.Markdown(
                    "Uses the image, caption, bitrate and models chosen above.",
                    elem_classes=["taco-small"],
                )
                cap_view = gr.Radio(
                    list(CAPTION_VIEWS),
                    value=next(iter(CAPTION_VIEWS)),
                    label="Slider shows",
                )
                cap_btn = gr.Button("Run the caption experiment", variant="primary")
                cap_summary = gr.Markdown("")
            with gr.Column(scale=7, min_width=480):
                cap_labels = gr.HTML(
                    side_labels_html("Your caption", "Empty caption"), padding=False
                )
                cap_slider = gr.ImageSlider(
                    label="TACO reconstructions under two captions",
                    type="numpy",
                    format="png",
                    max_height=480,
                    interactive=False,
                    buttons=["fullscreen"],
                    elem_id="taco-cap-slider",
                )
        cap_table = gr.Dataframe(
            headers=CAPTION_COLUMNS,
            label="Same image, same λ, three captions",
            interactive=False,
            wrap=True,
            elem_id="taco-cap-table",
        )
        with gr.Row():
            with gr.Column(scale=7, min_width=480):
                gr.HTML(
                    side_labels_html("vs empty caption", "vs second caption"),
                    padding=False,
                )
                cap_diff = gr.ImageSlider(
                    label="|x̂(your caption) − x̂(other)|, amplified",
                    type="numpy",
                    format="png",
                    max_height=480,
                    interactive=False,
                    buttons=["fullscreen"],
                    elem_id="taco-cap-diff",
                )
            with gr.Column(scale=3, min_width=260):
                cap_legend = gr.HTML("")
    with gr.Tab("Caption attention", id="attention"):
        gr.Markdown(ATTENTION_NOTE)
        with gr.Row():
            with gr.Column(scale=3, min_width=280):
                att_btn = gr.Button("Show where the encoder looks", variant="primary")
                att_word = gr.Dropdown(
                    choices=[], label="Word", interactive=True, elem_id="taco-att-word"
                )
                att_rank = gr.Markdown("", elem_id="taco-att-rank")
            with gr.Column(scale=7, min_width=480):
                att_image = gr.Image(
                    label="Attention to the chosen word (warm = more)",
                    type="numpy",
                    format="png",
                    interactive=False,
                    buttons=["fullscreen"],
                    elem_id="taco-att-image",
                )
    with gr.Tab("Zoom", id="zoom"):
        gr.Markdown(
            "Pick a point (the sliders, or a click on the image): the same region of the "
            "original, TACO, ELIC and AVIF at TACO's bpp, 4× enlarged by pixel repetition "
            "(no smoothing)."
        )
        with gr.Row():
            zoom_x = gr.Slider(0, 100, value=50, step=1, label="Zoom centre: x (% of width)")
            zoom_y = gr.Slider(0, 100, value=50, step=1, label="y (% of height)")
            zoom_btn = gr.Button("Show the crops", variant="secondary")
        zoom_src = gr.Image(label="Click where to zoom", type="numpy", interactive=False,
                            elem_id="taco-zoom-src", height=360)
        zoom_out = gr.Image(label="4× crops", type="numpy", format="png",
                            interactive=False, buttons=["download", "fullscreen"],
                            elem_id="taco-zoom")
    return {
        "att_btn": att_btn,
        "att_image": att_image,
        "att_rank": att_rank,
        "att_word": att_word,
        "cap_btn": cap_btn,
        "cap_diff": cap_diff,
        "cap_labels": cap_labels,
        "cap_legend": cap_legend,
        "cap_slider": cap_slider,
        "cap_summary": cap_summary,
        "cap_table": cap_table,
        "cap_view": cap_view,
        "second_caption": second_caption,
        "zoom_btn": zoom_btn,
        "zoom_out": zoom_out,
        "zoom_src": zoom_src,
        "zoom_x": zoom_x,
        "zoom_y": zoom_y,
    }
