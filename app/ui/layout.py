"""Gradio wiring of the demo: `build_demo()` -> gr.Blocks.

Components only: every event calls a method of `app.ui.events.Callbacks`, and the comparison's
inputs and outputs are listed by name (`COMPARE_FIELDS`, `COMPARE_OUTPUTS`), not by position.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from app.settings import get_settings
from app.ui import plots
from app.ui.backend import Backend, default_backend
from app.ui.defaults import DEFAULT_RATE, DEFAULT_TARGET_BPP
from app.ui.events import COMPARE_FIELDS, COMPARE_OUTPUTS, EXTRA_OUTPUTS, Callbacks
from app.ui.examples import (
    Example,
    example_values,
    examples_cache_dir,
    examples_cache_tag,
    examples_fn,
    load_examples,
)
from app.ui.model_sets import ModelSet, missing_weights_notice, resolve_model_sets
from app.ui.present import (
    DEFAULT_VIEW,
    VIEWS,
    empty_metrics_frame,
    side_labels_html,
    view_labels_html,
)
from app.ui.references import PUBLISHED_CURVES, load_reference_curves
from app.ui.tabs import build_secondary_tabs
from app.ui.theme import launch_kwargs, markdown

__all__ = ["build_demo", "launch_kwargs"]

#: Temporary files (uploads, outputs) are swept every 30 min once older than 1 h.
DELETE_CACHE = (1800, 3600)

log = logging.getLogger(__name__)


def build_demo(
    model_sets: Mapping[str, ModelSet] | None = None,
    backend: Backend | None = None,
    examples: list[Example] | None = None,
    results_dir: Path | None = None,
    prewarm: bool = False,
) -> gr.Blocks:
    """Build the demo. Tests inject `model_sets` (e.g. the tiny random set) and a `backend`.

    Nothing heavy happens here unless ``prewarm``: models load on the first request. The page
    opens on the first example with its results (``TACO_UI_START_EXAMPLE``, on by default),
    computed on the first visit, or here, before the server starts, with ``prewarm`` (what
    ``app.py`` does: a few seconds more at start-up, and every page opens finished at once).
    """
    settings = get_settings()
    backend = backend or default_backend()
    sets = dict(model_sets) if model_sets else resolve_model_sets(backend)
    set_labels = list(sets)
    default_set = set_labels[0]
    examples = load_examples() if examples is None else examples
    # The page opens on the first example: its image and caption are the inputs' initial values
    # (the page-load event fills in only its results, so it can never overwrite an example or an
    # upload the visitor picked while those results were still being computed).
    start = examples[0] if examples and settings.ui_start_example else None
    cb = Callbacks(backend, sets, [*load_reference_curves(results_dir), *PUBLISHED_CURVES])

    # ------------------------------------------------------------------ layout

    with gr.Blocks(title="TACO: text-guided image compression", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(markdown("header.md"), elem_id="taco-title")
        setup_notice = missing_weights_notice(backend) if model_sets is None else ""
        if setup_notice:
            gr.Markdown(setup_notice, elem_id="taco-setup-notice")
        if any(ms.allow_random for ms in sets.values()):
            gr.Markdown(
                "**Test mode** (random-weight or stand-in models): the reconstructions are not "
                "a trained TACO's; this only exercises the interface.",
                elem_id="taco-test-mode",
            )

        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=340):
                image = gr.Image(
                    value=str(start.path) if start else None,
                    label="Image",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=280,
                    elem_id="taco-image",
                )
                image_note = gr.Markdown(cb.input_notice(str(start.path)) if start else "",
                                         elem_classes=["taco-small"])
                ex_holder = gr.Column()
                caption = gr.Textbox(
                    value=start.caption if start else "",
                    label="Caption (goes to TACO's encoder only: 0 bits, never transmitted)",
                    lines=2,
                    max_lines=4,
                    placeholder="Describe the image, e.g. “A red cup of espresso on a wooden table”",
                    elem_id="taco-caption",
                )
                with gr.Row():
                    token_md = gr.Markdown("", elem_classes=["taco-small"])
                    auto_btn = gr.Button("Auto-caption (BLIP)", size="sm", scale=0, min_width=140)
                model_set = gr.Radio(
                    set_labels,
                    value=default_set,
                    label="Models",
                    info=None
                    if any("official" in ms.taco for ms in sets.values())
                    else "“Official TACO” appears when its checkpoints are in "
                    "checkpoints/official/.",
                    elem_id="taco-model-set",
                )
                rate = gr.Slider(
                    0,
                    100,
                    value=DEFAULT_RATE,
                    step=1,
                    label="Bitrate (low ← → high)",
                    elem_id="taco-rate",
                )
                rate_md = gr.Markdown("", elem_classes=["taco-small"])
                with gr.Row():
                    use_target = gr.Checkbox(label="Aim at a target bpp instead", value=False)
                    target_bpp = gr.Number(
                        value=DEFAULT_TARGET_BPP,
                        label="Target bpp",
                        minimum=0.005,
                        maximum=24,
                        step=0.01,
                        min_width=120,
                    )
                with gr.Accordion("Advanced", open=False):
                    rate_matched = gr.Checkbox(
                        value=True,
                        label="Rate-matched rows: ELIC, JPEG, WebP, AVIF searched to TACO's bpp "
                        "(slower)",
                    )
                    lpips_conv = gr.Radio(
                        [
                            ("standard ([-1, 1] inputs)", "standard"),
                            ("paper convention ([0, 1] inputs)", "paper"),
                        ],
                        value="standard",
                        label="LPIPS convention",
                    )
                compare_btn = gr.Button(
                    "Compress with TACO and ELIC", variant="primary", elem_id="taco-compare-btn"
                )

            with gr.Column(scale=7, min_width=480):
                view = gr.Radio(
                    list(VIEWS),
                    value=DEFAULT_VIEW,
                    label="Slider shows (left | right)",
                    show_label=False,
                    container=False,
                    elem_id="taco-view",
                )
                view_labels = gr.HTML(view_labels_html(DEFAULT_VIEW), padding=False)
                slider = gr.ImageSlider(
                    label="Reconstructions (drag the handle)",
                    type="numpy",
                    format="png",
                    max_height=600,
                    buttons=["download", "fullscreen"],
                    interactive=False,
                    elem_id="taco-slider",
                )
                table = gr.Dataframe(
                    value=empty_metrics_frame(),
                    label="Metrics (bpp from the real file bytes; PSNR on 8-bit output)",
                    interactive=False,
                    column_widths=["18%", "14%", "9%", "10%", "9%", "10%", "9%", "10%", "11%"],
                    wrap=True,
                    elem_id="taco-metrics",
                )
                status = gr.Markdown(
                    "Click an example photo on the left (it runs at once), or upload your own "
                    "image and press **Compress**.",
                    elem_id="taco-status",
                )

        with gr.Tabs():
            with gr.Tab("Error maps", id="errors"):
                gr.Markdown(
                    "Per-pixel error |x − x̂| of **TACO (left)** and **ELIC (right)** at the same "
                    "λ, on **one** colour scale: brighter = larger error.",
                    elem_classes=["taco-small"],
                )
                with gr.Row():
                    with gr.Column(scale=7, min_width=480):
                        gr.HTML(side_labels_html("TACO |x − x̂|", "ELIC |x − x̂|"), padding=False)
                        err_slider = gr.ImageSlider(
                            label="Error maps: TACO | ELIC",
                            type="numpy",
                            format="png",
                            max_height=560,
                            buttons=["fullscreen"],
                            interactive=False,
                            elem_id="taco-errors",
                        )
                    with gr.Column(scale=3, min_width=260):
                        err_legend = gr.HTML("")
            with gr.Tab("Rate–distortion chart", id="rd"):
                rd_plot = gr.Plot(
                    value=plots.rd_figure([], cb.references),
                    label="Rate–distortion",
                    elem_id="taco-rd",
                )
                gr.Markdown(markdown("rd_note.md"), elem_classes=["taco-small"])
            tab = build_secondary_tabs()
            att_btn = tab["att_btn"]
            att_image = tab["att_image"]
            att_rank = tab["att_rank"]
            att_word = tab["att_word"]
            cap_btn = tab["cap_btn"]
            cap_diff = tab["cap_diff"]
            cap_labels = tab["cap_labels"]
            cap_legend = tab["cap_legend"]
            cap_slider = tab["cap_slider"]
            cap_summary = tab["cap_summary"]
            cap_table = tab["cap_table"]
            cap_view = tab["cap_view"]
            second_caption = tab["second_caption"]
            zoom_btn = tab["zoom_btn"]
            zoom_out = tab["zoom_out"]
            zoom_src = tab["zoom_src"]
            zoom_x = tab["zoom_x"]
            zoom_y = tab["zoom_y"]
            with gr.Tab("Bitstreams", id="bitstreams"):
                gr.Markdown(
                    "The real files behind the bpp numbers. The header holds the model id, a "
                    "weights fingerprint, λ and the image size; **no caption**. Decode them in "
                    "the next tab.",
                    elem_classes=["taco-small"],
                )
                bitstreams = gr.File(
                    label="Bitstreams (.taco): TACO, ELIC",
                    file_count="multiple",
                    interactive=False,
                    elem_id="taco-bitstreams",
                )
                metrics_json = gr.JSON(label="All numbers (JSON)", open=False)
            with gr.Tab("Decode a .taco file", id="decode"):
                gr.Markdown(
                    "Upload a `.taco` file made by this demo or by `python -m app compress`. "
                    "**There is no caption box here on purpose:** TACO's decoder never sees "
                    "text, so the file decodes without it."
                )
                with gr.Row():
                    with gr.Column(scale=4, min_width=320):
                        taco_file = gr.File(
                            label=".taco file", file_types=[".taco"], type="filepath"
                        )
                        decode_btn = gr.Button("Decode", variant="primary")
                        decode_info = gr.Markdown("")
                    with gr.Column(scale=7, min_width=480):
                        decoded = gr.Image(
                            label="Decoded image",
                            type="numpy",
                            format="png",
                            interactive=False,
                            buttons=["download", "fullscreen"],
                        )
            with gr.Tab("About", id="about"):
                gr.Markdown(markdown("about.md"))

        gr.Markdown(markdown("footer.md"), elem_id="taco-footer")

        # by name: the order is that of CompareRequest's fields and of Callbacks.present
        named = locals()
        compare_inputs = [named[name] for name in COMPARE_FIELDS]
        compare_outputs = [named[name] for name in COMPARE_OUTPUTS]
        extra_outputs = [named[name] for name in EXTRA_OUTPUTS]

        if examples:
            with ex_holder, examples_cache_dir(examples_cache_tag(sets)):
                gr.Examples(
                    examples=[example_values(ex, default_set) for ex in examples],
                    inputs=compare_inputs,
                    outputs=compare_outputs,
                    fn=examples_fn(cb.compare),
                    cache_examples=True,
                    cache_mode="lazy",
                    visible_columns=[0],
                    label="Examples (click one: it runs with its own caption)",
                    examples_per_page=8,
                    elem_id="taco-examples",
                )

        # ---------------------------------------------------------------- events
        heavy: dict[str, Any] = dict(concurrency_limit=settings.ui_concurrency, concurrency_id="codec")
        light: dict[str, Any] = dict(queue=False, show_progress="hidden")

        compare_btn.click(
            cb.compare_fast,
            compare_inputs,
            compare_outputs,
            validator=cb.validate_compare,
            api_visibility="private",
            **heavy,
        ).success(
            cb.compare_extras,
            compare_inputs,
            extra_outputs,
            api_visibility="private",
            show_progress="minimal",
            **heavy,
        )
        # The documented API endpoint: everything in one call.
        api_btn = gr.Button("compare (API)", visible=False)
        api_btn.click(
            cb.compare,
            compare_inputs,
            compare_outputs,
            api_name="compare",
            validator=cb.validate_compare,
            **heavy,
        )
        rate.release(
            cb.rate_line, [model_set, rate], [rate_md], api_visibility="private", **light
        ).then(
            cb.compare_on_release,
            compare_inputs,
            compare_outputs,
            api_visibility="private",
            trigger_mode="always_last",
            **heavy,
        ).success(
            cb.compare_extras,
            compare_inputs,
            extra_outputs,
            api_visibility="private",
            show_progress="minimal",
            **heavy,
        )
        view.change(view_labels_html, [view], [view_labels], api_visibility="private", **light)
        view.change(
            cb.switch_view,
            compare_inputs,
            [slider, status],
            api_visibility="private",
            show_progress="minimal",
            **heavy,
        )
        model_set.change(
            cb.on_model_set,
            [model_set, rate, caption],
            [rate, rate_md, token_md],
            api_visibility="private",
            **light,
        )
        caption.change(
            cb.token_counter,
            [caption, model_set],
            [token_md],
            trigger_mode="always_last",
            api_visibility="private",
            **light,
        )
        # queued: the notice decodes the whole upload, so concurrent uploads must be bounded
        # like every other heavy event
        image.change(cb.input_notice, [image], [image_note],
                     api_visibility="private", show_progress="hidden", concurrency_limit=2,
                     concurrency_id="input_notice")
        # the image's caption-free work starts while the user writes a caption, in three events
        # so that a press meanwhile is served between them
        prep_inputs = [named[n] for n in ("image", "rate", "use_target", "model_set", "lpips_conv")]
        prep: dict[str, Any] = dict(api_visibility="private", show_progress="hidden",
                                    trigger_mode="always_last", **heavy)
        image.change(cb.prepare_first, prep_inputs, None, **prep).then(
            cb.prepare_second, prep_inputs, None, **prep).then(
            cb.prepare_classical, prep_inputs, None, **prep)
        auto_btn.click(
            cb.auto_caption,
            [image, caption],
            [caption],
            api_name="auto_caption",
            concurrency_limit=1,
            concurrency_id="captioner",
        )
        cap_btn.click(
            cb.caption_effect,
            [image, caption, second_caption, rate, model_set, cap_view],
            [cap_slider, cap_diff, cap_legend, cap_table, cap_summary],
            api_name="caption_effect",
            **heavy,
        )
        cap_view.change(
            cb.cap_side_labels, [cap_view], [cap_labels], api_visibility="private", **light
        )
        cap_view.change(
            cb.caption_effect,
            [image, caption, second_caption, rate, model_set, cap_view],
            [cap_slider, cap_diff, cap_legend, cap_table, cap_summary],
            api_visibility="private",
            show_progress="minimal",
            **heavy,
        )
        att_btn.click(
            cb.attention,
            [image, caption, model_set],
            [att_image, att_word, att_rank],
            api_name="attention",
            **heavy,
        )
        att_word.input(
            cb.attention,
            [image, caption, model_set, att_word],
            [att_image, att_word, att_rank],
            api_visibility="private",
            show_progress="minimal",
            **heavy,
        )
        zoom_btn.click(cb.zoom_at, [*compare_inputs, zoom_x, zoom_y], [zoom_src, zoom_out],
                       api_visibility="private", **heavy)
        zoom_src.select(cb.zoom, compare_inputs, [zoom_src, zoom_out],
                        api_visibility="private", show_progress="minimal", **heavy)
        decode_btn.click(cb.decode, [taco_file], [decoded, decode_info], api_name="decode", **heavy)
        taco_file.upload(
            cb.decode, [taco_file], [decoded, decode_info], api_visibility="private", **heavy
        )
        if start is not None:
            cb.set_start_example(example_values(start, default_set))
            demo.load(cb.start_outputs, None, compare_outputs,
                      api_visibility="private", show_progress="minimal", **heavy)
            if prewarm:
                # before the server takes visitors: the page-load event then answers at once, so
                # nothing a visitor clicks can be overtaken by the opening example's results
                log.info("computing the opening example (%s)", start.path.name)
                cb.start_outputs()
        # Page load: slider step, λ line and token counter for the default models (the TACO model
        # loads here, in the background of the first visit, not at server start).
        demo.load(
            cb.on_model_set,
            [model_set, rate, caption],
            [rate, rate_md, token_md],
            api_visibility="private",
            **light,
        )

    demo.queue(default_concurrency_limit=settings.ui_concurrency, max_size=settings.ui_queue)
    return demo
