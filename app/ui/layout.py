"""Gradio wiring of the demo: `build_demo()` -> gr.Blocks, and `launch_kwargs()`.

No logic lives here: every callback is a thin adapter from component values to a function of
`app.ui.handlers` and back (plus turning `TacoError` into a one-line `gr.Error`).
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from app.errors import TacoError
from app.ui import handlers as H
from app.ui import plots

log = logging.getLogger(__name__)

UI_DIR = Path(__file__).resolve().parent
#: Temporary files (uploads, outputs) are swept every 30 min once older than 1 h.
DELETE_CACHE = (1800, 3600)
#: Heavy events share one CPU pool; at most this many requests wait in line.
HEAVY_CONCURRENCY = int(os.environ.get("TACO_UI_CONCURRENCY", "1"))
QUEUE_MAX_SIZE = int(os.environ.get("TACO_UI_QUEUE", "16"))

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
        if os.environ.get("TACO_UI_WEBFONTS") == "1"
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


def _md(name: str) -> str:
    p = UI_DIR / name
    return p.read_text(encoding="utf-8") if p.is_file() else ""


@contextlib.contextmanager
def _examples_cache_dir(tag: str) -> Iterator[None]:
    """Cache example outputs under a per-model folder, so a model change never shows stale ones."""
    key = "GRADIO_EXAMPLES_CACHE"
    old = os.environ.get(key)
    base = Path(old) if old else Path(".gradio") / "cached_examples"
    os.environ[key] = str(base / tag)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _as_gr_error(exc: BaseException) -> gr.Error:
    if isinstance(exc, TacoError):
        msg = H._one_line(exc)
    else:
        log.exception("unexpected error in a demo callback")
        msg = f"Unexpected error ({type(exc).__name__}): {H._one_line(exc)}"
    return gr.Error(html.escape(msg, quote=False), print_exception=False)


def _progress_fn(progress: gr.Progress) -> H.ProgressFn:
    def cb(fraction: float, desc: str) -> None:
        try:
            progress(fraction, desc=desc)
        except Exception:  # progress is cosmetic; never fail a request on it
            pass

    return cb


def build_demo(
    model_sets: Mapping[str, H.ModelSet] | None = None,
    backend: H.Backend | None = None,
    examples: list[H.Example] | None = None,
    results_dir: Path | None = None,
) -> gr.Blocks:
    """Build the demo. Tests inject `model_sets` (e.g. the tiny random set) and a `backend`.

    Nothing heavy happens here: models load on the first request.
    """
    backend = backend or H.default_backend()
    sets = dict(model_sets) if model_sets else H.resolve_model_sets(backend)
    set_labels = list(sets)
    default_set = set_labels[0]
    examples = H.load_examples() if examples is None else examples
    references = [*H.load_reference_curves(results_dir), *H.PUBLISHED_CURVES]

    def pick(label: str | None) -> H.ModelSet:
        return H.pick_model_set(label or default_set, sets)

    # ------------------------------------------------------------------ callbacks (adapters)

    def present(result: H.CompareResult, view: str, lpips_conv: str) -> tuple:
        maps = H.error_maps(result)
        paths = H.write_bitstreams(result)
        fig = plots.rd_figure(H.rd_points(result.runs), references, lpips_conv)
        err_value = (maps.left, maps.right) if maps else None
        legend = H.error_legend_html(maps) if maps else ""

        status = H.status_markdown(result)
        note = H.view_note(result, view)
        if note:
            status += "\n\n" + note
        return (
            H.slider_pair(result, view),
            H.metrics_frame(result),
            err_value,
            legend,
            fig,
            [str(p) for p in paths.values()],
            status,
            H.metrics_records(result),
        )

    def compare(
        image: str | None,
        caption: str,
        rate: float,
        use_target: bool,
        target_bpp: float | None,
        model_set: str,
        rate_matched: bool,
        view: str,
        lpips_conv: str,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple:
        """Compare TACO with ELIC (same λ) and, optionally, ELIC/JPEG/WebP/AVIF at TACO's bpp.

        Args:
            image: the input image (any common format; the long side is capped at 768 px).
            caption: text for TACO's encoder (never transmitted; may be empty).
            rate: bitrate slider position, 0 (lowest) to 100 (highest), mapped to λ.
            use_target: search TACO's λ for `target_bpp` instead of using `rate`.
            target_bpp: the bpp to aim for when `use_target` is true.
            model_set: which models to use (label of a model set).
            rate_matched: also run ELIC, JPEG, WebP and AVIF searched to TACO's bpp.
            view: which pair the slider shows, e.g. "TACO | ELIC" or "Original | TACO".
            lpips_conv: "standard" or "paper" LPIPS convention.
        Returns:
            slider pair, metrics table, error-map pair, colour bar HTML, RD figure,
            the TACO and ELIC .taco files, status Markdown, metrics as JSON records.
        """
        try:
            result = H.run_compare(
                image,
                caption,
                rate,
                target_bpp=float(target_bpp) if use_target and target_bpp else None,
                model_set=pick(model_set),
                rate_matched=bool(rate_matched),
                lpips_convention=lpips_conv if lpips_conv in H.LPIPS_LABELS else "standard",
                backend=backend,
                progress=_progress_fn(progress),
            )
            return present(result, view, lpips_conv)
        except Exception as exc:
            raise _as_gr_error(exc) from None

    def compare_fast(*args: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        """TACO and ELIC only (fast first answer in the UI; rate-matched rows follow)."""
        args = list(args)
        args[6] = False
        return compare(*args, progress=progress)

    def compare_extras(*args: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        """Second step in the UI: add the rate-matched rows (table, RD chart, status, JSON)."""
        if not args[6] or not args[0]:
            return (gr.skip(),) * 4
        out = compare(*args, progress=progress)
        return out[1], out[4], out[6], out[7]

    def compare_on_release(*args: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        if not args[0]:
            return (gr.skip(),) * 8
        return compare_fast(*args, progress=progress)

    def validate_compare(
        image: Any,
        caption: str,
        rate: float,
        use_target: bool,
        target_bpp: float | None,
        model_set: str,
        rate_matched: bool,
        view: str,
        lpips_conv: str,
    ) -> list[dict]:
        target_ok = not use_target or (target_bpp is not None and 0.005 <= float(target_bpp) <= 24)
        return [
            gr.validate(image is not None, "Upload an image or pick an example first."),
            gr.validate(True, ""),
            gr.validate(True, ""),
            gr.validate(True, ""),
            gr.validate(target_ok, "Target bpp must be between 0.005 and 24."),
            gr.validate(True, ""),
            gr.validate(True, ""),
            gr.validate(True, ""),
            gr.validate(True, ""),
        ]

    def switch_view(*args: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        """Change the slider's pair (results come from the cache; recomputed if evicted)."""
        if not args[0]:
            return gr.skip(), gr.skip()
        view = args[7]
        try:
            result = H.run_compare(
                args[0],
                args[1],
                args[2],
                target_bpp=float(args[4]) if args[3] and args[4] else None,
                model_set=pick(args[5]),
                rate_matched=bool(args[6])
                or view in ("TACO | ELIC @ TACO bpp", "TACO | JPEG @ TACO bpp"),
                lpips_convention=args[8] if args[8] in H.LPIPS_LABELS else "standard",
                backend=backend,
                progress=_progress_fn(progress),
            )
        except Exception as exc:
            raise _as_gr_error(exc) from None
        return H.slider_pair(result, view), H.view_note(result, view)

    def token_counter(caption: str, model_set: str) -> str:
        return H.caption_token_markdown(caption, pick(model_set), backend)

    def rate_line(model_set: str, rate: float) -> str:
        return H.rate_label(pick(model_set), rate, backend)

    def on_model_set(model_set: str, rate: float, caption: str) -> tuple:
        ms = pick(model_set)
        step = H.slider_step(ms, backend)
        value = round(rate / step) * step if step > 1 else rate
        return (
            gr.Slider(step=step, value=value),
            H.rate_label(ms, value, backend),
            H.caption_token_markdown(caption, ms, backend),
        )

    def input_notice(image: str | None) -> str:
        return H.input_notice(image, backend)

    def do_auto_caption(image: str | None, caption: str) -> str:
        if not image:
            gr.Warning("Upload an image first.")
            return caption
        text, message = H.auto_caption(image, caption, backend)
        (gr.Info if text != caption else gr.Warning)(html.escape(message))
        return text

    def caption_effect(
        image: str | None,
        caption: str,
        second: str,
        rate: float,
        model_set: str,
        view: str,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple:
        """TACO under your caption, an empty caption and a second caption (same λ)."""
        try:
            eff = H.run_caption_effect(
                image,
                caption,
                second,
                rate,
                model_set=pick(model_set),
                backend=backend,
                progress=_progress_fn(progress),
            )
        except Exception as exc:
            raise _as_gr_error(exc) from None
        maps = H.caption_diff_maps(eff)
        legend = H.colorbar_html(maps.vmax, "|x̂(your caption) − x̂(other caption)|, 8-bit levels")
        return (
            H.caption_effect_pair(eff, view),
            (maps.vs_empty, maps.vs_second),
            legend,
            H.caption_effect_frame(eff),
            H.caption_effect_summary(eff, maps),
        )

    def cap_side_labels(view: str) -> str:
        right = "Second caption" if "second" in view else "Empty caption"
        return H.side_labels_html("Your caption", right)

    def decode(file: Any) -> tuple:
        """Decode an uploaded .taco file; no caption is involved."""
        try:
            return H.decode_bitstream(file, backend)
        except Exception as exc:
            raise _as_gr_error(exc) from None

    # ------------------------------------------------------------------ layout

    with gr.Blocks(title="TACO: text-guided image compression", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(_md("header.md"), elem_id="taco-title")
        setup_notice = H.missing_weights_notice(backend) if model_sets is None else ""
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
                    label="Image",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=280,
                    elem_id="taco-image",
                )
                image_note = gr.Markdown("", elem_classes=["taco-small"])
                ex_holder = gr.Column()
                caption = gr.Textbox(
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
                    value=H.DEFAULT_RATE,
                    step=1,
                    label="Bitrate (low ← → high)",
                    elem_id="taco-rate",
                )
                rate_md = gr.Markdown("", elem_classes=["taco-small"])
                with gr.Row():
                    use_target = gr.Checkbox(label="Aim at a target bpp instead", value=False)
                    target_bpp = gr.Number(
                        value=H.DEFAULT_TARGET_BPP,
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
                    list(H.VIEWS),
                    value=H.DEFAULT_VIEW,
                    label="Slider shows (left | right)",
                    show_label=False,
                    container=False,
                    elem_id="taco-view",
                )
                view_labels = gr.HTML(H.view_labels_html(H.DEFAULT_VIEW), padding=False)
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
                    value=H.empty_metrics_frame(),
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
                        gr.HTML(H.side_labels_html("TACO |x − x̂|", "ELIC |x − x̂|"), padding=False)
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
                    value=plots.rd_figure([], references),
                    label="Rate–distortion",
                    elem_id="taco-rd",
                )
                gr.Markdown(_md("rd_note.md"), elem_classes=["taco-small"])
            with gr.Tab("Caption effect", id="caption"):
                gr.Markdown(H.CAPTION_EFFECT_NOTE)
                with gr.Row():
                    with gr.Column(scale=4, min_width=320):
                        second_caption = gr.Textbox(
                            label="Second caption (e.g. a wrong one)",
                            value=H.DEFAULT_SECOND_CAPTION,
                            lines=2,
                        )
                        gr.Markdown(
                            "Uses the image, caption, bitrate and models chosen above.",
                            elem_classes=["taco-small"],
                        )
                        cap_view = gr.Radio(
                            list(H.CAPTION_VIEWS),
                            value=next(iter(H.CAPTION_VIEWS)),
                            label="Slider shows",
                        )
                        cap_btn = gr.Button("Run the caption experiment", variant="primary")
                        cap_summary = gr.Markdown("")
                    with gr.Column(scale=7, min_width=480):
                        cap_labels = gr.HTML(
                            H.side_labels_html("Your caption", "Empty caption"), padding=False
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
                    headers=H.CAPTION_COLUMNS,
                    label="Same image, same λ, three captions",
                    interactive=False,
                    wrap=True,
                    elem_id="taco-cap-table",
                )
                with gr.Row():
                    with gr.Column(scale=7, min_width=480):
                        gr.HTML(
                            H.side_labels_html("vs empty caption", "vs second caption"),
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
                gr.Markdown(_md("about.md"))

        gr.Markdown(_md("footer.md"), elem_id="taco-footer")

        compare_inputs = [
            image,
            caption,
            rate,
            use_target,
            target_bpp,
            model_set,
            rate_matched,
            view,
            lpips_conv,
        ]
        compare_outputs = [
            slider,
            table,
            err_slider,
            err_legend,
            rd_plot,
            bitstreams,
            status,
            metrics_json,
        ]

        if examples:
            with ex_holder, _examples_cache_dir(H.examples_cache_tag(sets)):
                gr.Examples(
                    examples=[
                        [
                            str(ex.path),
                            ex.caption,
                            H.DEFAULT_RATE,
                            False,
                            H.DEFAULT_TARGET_BPP,
                            default_set,
                            True,
                            H.DEFAULT_VIEW,
                            "standard",
                        ]
                        for ex in examples
                    ],
                    inputs=compare_inputs,
                    outputs=compare_outputs,
                    fn=_examples_fn(compare),
                    cache_examples=True,
                    cache_mode="lazy",
                    visible_columns=[0],
                    label="Examples (click one: it runs with its own caption)",
                    examples_per_page=8,
                    elem_id="taco-examples",
                )

        # ---------------------------------------------------------------- events
        heavy = dict(concurrency_limit=HEAVY_CONCURRENCY, concurrency_id="codec")
        light = dict(queue=False, show_progress="hidden")

        compare_btn.click(
            compare_fast,
            compare_inputs,
            compare_outputs,
            validator=validate_compare,
            api_visibility="private",
            **heavy,
        ).success(
            compare_extras,
            compare_inputs,
            [table, rd_plot, status, metrics_json],
            api_visibility="private",
            show_progress="minimal",
            **heavy,
        )
        # The documented API endpoint: everything in one call.
        api_btn = gr.Button("compare (API)", visible=False)
        api_btn.click(
            compare,
            compare_inputs,
            compare_outputs,
            api_name="compare",
            validator=validate_compare,
            **heavy,
        )
        rate.release(
            rate_line, [model_set, rate], [rate_md], api_visibility="private", **light
        ).then(
            compare_on_release,
            compare_inputs,
            compare_outputs,
            api_visibility="private",
            trigger_mode="always_last",
            **heavy,
        ).success(
            compare_extras,
            compare_inputs,
            [table, rd_plot, status, metrics_json],
            api_visibility="private",
            show_progress="minimal",
            **heavy,
        )
        view.change(H.view_labels_html, [view], [view_labels], api_visibility="private", **light)
        view.change(
            switch_view,
            compare_inputs,
            [slider, status],
            api_visibility="private",
            show_progress="minimal",
            **heavy,
        )
        model_set.change(
            on_model_set,
            [model_set, rate, caption],
            [rate, rate_md, token_md],
            api_visibility="private",
            **light,
        )
        caption.change(
            token_counter,
            [caption, model_set],
            [token_md],
            trigger_mode="always_last",
            api_visibility="private",
            **light,
        )
        # queued: the notice decodes the whole upload, so concurrent uploads must be bounded
        # like every other heavy event
        image.change(input_notice, [image], [image_note],
                     api_visibility="private", show_progress="hidden", concurrency_limit=2,
                     concurrency_id="input_notice")
        auto_btn.click(
            do_auto_caption,
            [image, caption],
            [caption],
            api_name="auto_caption",
            concurrency_limit=1,
            concurrency_id="captioner",
        )
        cap_btn.click(
            caption_effect,
            [image, caption, second_caption, rate, model_set, cap_view],
            [cap_slider, cap_diff, cap_legend, cap_table, cap_summary],
            api_name="caption_effect",
            **heavy,
        )
        cap_view.change(
            cap_side_labels, [cap_view], [cap_labels], api_visibility="private", **light
        )
        cap_view.change(
            caption_effect,
            [image, caption, second_caption, rate, model_set, cap_view],
            [cap_slider, cap_diff, cap_legend, cap_table, cap_summary],
            api_visibility="private",
            show_progress="minimal",
            **heavy,
        )
        decode_btn.click(decode, [taco_file], [decoded, decode_info], api_name="decode", **heavy)
        taco_file.upload(
            decode, [taco_file], [decoded, decode_info], api_visibility="private", **heavy
        )
        # Page load: slider step, λ line and token counter for the default models (the TACO model
        # loads here, in the background of the first visit, not at server start).
        demo.load(
            on_model_set,
            [model_set, rate, caption],
            [rate, rate_md, token_md],
            api_visibility="private",
            **light,
        )

    demo.queue(default_concurrency_limit=HEAVY_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    return demo


def _examples_fn(compare: Callable[..., tuple]) -> Callable[..., tuple]:
    def run_example(
        image: str,
        caption: str,
        rate: float,
        use_target: bool,
        target_bpp: float,
        model_set: str,
        rate_matched: bool,
        view: str,
        lpips_conv: str,
    ) -> tuple:
        return compare(
            image,
            caption,
            rate,
            use_target,
            target_bpp,
            model_set,
            rate_matched,
            view,
            lpips_conv,
            progress=gr.Progress(),
        )

    return run_example
