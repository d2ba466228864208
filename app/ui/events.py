"""The demo's callbacks: component values in, the service functions' results out.

`CompareRequest` is the comparison's inputs by name (Gradio passes them in the order of
`COMPARE_FIELDS`, which `app.ui.layout` builds its input list from); `Callbacks` holds the backend,
the model sets and the reference curves, and turns every `TacoError` into a one-line `gr.Error`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import html
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.errors import TacoError, first_line
from app.settings import get_settings
from app.ui import plots
from app.ui.attention_tab import run_attention
from app.ui.backend import Backend
from app.ui.caption_effect import (
    caption_diff_maps,
    caption_effect_frame,
    caption_effect_pair,
    caption_effect_summary,
    run_caption_effect,
)
from app.ui.captions import auto_caption, caption_token_markdown
from app.ui.compare import CompareResult, input_notice, prepare_image, run_compare
from app.ui.decode_tab import decode_bitstream
from app.ui.defaults import LPIPS_LABELS, MAX_TARGET_BPP, MIN_TARGET_BPP, ProgressFn
from app.ui.model_sets import ModelSet, pick_model_set
from app.ui.present import (
    colorbar_html,
    error_legend_html,
    error_maps,
    metrics_frame,
    metrics_records,
    png_files,
    side_labels_html,
    slider_pair,
    status_markdown,
    view_note,
    write_bitstreams,
)
from app.ui.rate import rate_label, slider_step
from app.ui.references import RefCurve, rd_points
from app.ui.zoom import mark_box, zoom_row

log = logging.getLogger(__name__)

#: Views of the slider that need the rate-matched rows.
RATE_MATCHED_VIEWS = ("TACO | ELIC @ TACO bpp", "TACO | JPEG @ TACO bpp")


@dataclass(frozen=True)
class CompareRequest:
    """What the user asked the comparison for (one field per input component)."""

    image: Any
    caption: str
    rate: float
    use_target: bool
    target_bpp: float | None
    model_set: str
    rate_matched: bool
    view: str
    lpips_conv: str

    @classmethod
    def of(cls, values: Sequence[Any]) -> CompareRequest:
        """From the input values, in the order of `COMPARE_FIELDS`."""
        return cls(*values)

    @property
    def target(self) -> float | None:
        """The bpp to search for, or None (the slider's λ)."""
        return float(self.target_bpp) if self.use_target and self.target_bpp else None

    @property
    def convention(self) -> str:
        return self.lpips_conv if self.lpips_conv in LPIPS_LABELS else "standard"

    def with_(self, **changes: Any) -> CompareRequest:
        return dataclasses.replace(self, **changes)


#: The comparison's inputs, in the order Gradio passes them.
COMPARE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CompareRequest))
#: The comparison's outputs, in the order `Callbacks.present` returns them.
COMPARE_OUTPUTS: tuple[str, ...] = (
    "slider", "table", "err_slider", "err_legend", "rd_plot", "bitstreams", "status",
    "metrics_json",
)
#: The outputs the second, rate-matched step updates (the first step leaves the error maps and
#: the RD chart empty for it).
EXTRA_OUTPUTS: tuple[str, ...] = ("table", "err_slider", "err_legend", "rd_plot", "status",
                                  "metrics_json")


def as_gr_error(exc: BaseException) -> gr.Error:
    if isinstance(exc, TacoError):
        msg = first_line(exc)
    else:
        log.exception("unexpected error in a demo callback")
        msg = f"Unexpected error ({type(exc).__name__}): {first_line(exc)}"
    return gr.Error(html.escape(msg, quote=False), print_exception=False)


def progress_fn(progress: gr.Progress) -> ProgressFn:
    def cb(fraction: float, desc: str) -> None:
        try:
            progress(fraction, desc=desc)
        except Exception:  # progress is cosmetic; never fail a request on it
            pass

    return cb


def _files_exist(outputs: Sequence[Any]) -> bool:
    """Whether every file a tuple of outputs names (slider, error maps, downloads) still exists."""
    paths = [p for value in outputs if isinstance(value, tuple | list)
             for p in value if isinstance(p, str)]
    return all(os.path.isfile(p) for p in paths)


def _NO_PROGRESS(*_: Any, **__: Any) -> None:
    return None


class Callbacks:
    """Every event handler of the demo, bound to one backend and one set of model sets."""

    def __init__(self, backend: Backend, sets: Mapping[str, ModelSet],
                 references: Sequence[RefCurve]) -> None:
        self.backend = backend
        self.sets = dict(sets)
        self.default_set = next(iter(self.sets))
        self.references = list(references)
        #: The page's opening example: its request values and, once computed, its outputs.
        self.start_values: tuple[Any, ...] | None = None
        self._start_outputs: tuple | None = None
        self._start_lock = threading.Lock()

    # ------------------------------------------------------------------ the opening example

    def set_start_example(self, values: Sequence[Any]) -> None:
        """The example the page opens on (``values``: every COMPARE_FIELDS value; the page shows
        its image and caption from the start)."""
        self.start_values = tuple(values)

    def start_outputs(self) -> tuple:
        """COMPARE_OUTPUTS of the opening example: computed once per process (the first page
        load, or before the server starts) and kept, so every visitor sees finished
        results at once. Failure leaves the outputs empty, never an error."""
        if self.start_values is None:
            return (gr.skip(),) * len(COMPARE_OUTPUTS)
        with self._start_lock:
            if self._start_outputs is not None and not _files_exist(self._start_outputs):
                self._start_outputs = None  # its files were pruned: present it again (cached)
            if self._start_outputs is None:
                try:
                    req = CompareRequest.of(self.start_values)
                    out = self.present(self.run(req, _NO_PROGRESS),  # type: ignore[arg-type]
                                       req.view, req.lpips_conv)
                except Exception as exc:  # a missing model must not break the page
                    log.warning("opening example not computed: %s", first_line(exc))
                    return (gr.skip(),) * len(COMPARE_OUTPUTS)
                self._start_outputs = tuple(out)
            return self._start_outputs

    def pick(self, label: str | None) -> ModelSet:
        return pick_model_set(label or self.default_set, self.sets)

    # ------------------------------------------------------------------ the comparison

    def run(self, req: CompareRequest, progress: gr.Progress, *,
            rate_matched: bool | None = None, ms_ssim: bool = True, early: bool = False,
            on_partial: Callable[[CompareResult], None] | None = None) -> CompareResult:
        return run_compare(
            req.image,
            req.caption,
            req.rate,
            target_bpp=req.target,
            model_set=self.pick(req.model_set),
            rate_matched=req.rate_matched if rate_matched is None else rate_matched,
            lpips_convention=req.convention,  # type: ignore[arg-type]
            backend=self.backend,
            progress=progress_fn(progress),
            ms_ssim=ms_ssim,
            early=early,
            on_partial=on_partial,
        )

    def present(self, result: CompareResult, view: str, lpips_conv: str,
                first: bool = False, maps: tuple | None = None) -> tuple:
        """COMPARE_OUTPUTS of a result; ``first`` (the page's first answer) leaves the error maps
        and the RD chart empty (cleared, not stale) for the second step to fill. ``maps``: the
        error-map outputs (files, legend) of an earlier update with the same TACO and ELIC rows."""
        paths = write_bitstreams(result)
        fig = None if first else plots.rd_figure(rd_points(result.runs), self.references,
                                                 lpips_conv)
        if maps is not None:
            err_value, legend = maps
        else:
            err = None if first else error_maps(result)
            err_value = png_files(err.left, err.right) if err else None
            legend = error_legend_html(err) if err else ""
        status = status_markdown(result)
        note = view_note(result, view)
        if note:
            status += "\n\n" + note
        return (
            png_files(*slider_pair(result, view)),
            metrics_frame(result),
            err_value,
            legend,
            fig,
            [str(p) for p in paths.values()],
            status,
            metrics_records(result),
        )

    def compare(
        self,
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
        req = CompareRequest(image, caption, rate, use_target, target_bpp, model_set,
                             rate_matched, view, lpips_conv)
        # An example clicked while the opening example is still being computed waits for it, so
        # its results reach the page after the opening ones, never before them.
        with self._start_lock:
            pass
        try:
            return self.present(self.run(req, progress), req.view, req.lpips_conv)
        except Exception as exc:
            raise as_gr_error(exc) from None

    def compare_fast(self, *values: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        """TACO and ELIC with bpp, PSNR and LPIPS: the page's fast first answer (MS-SSIM, the
        decoders' check of the files and their times, the error maps, the RD chart and the
        rate-matched rows follow in :meth:`compare_extras`)."""
        req = CompareRequest.of(values)
        try:
            return self.present(self.run(req, progress, rate_matched=False, ms_ssim=False,
                                         early=True), req.view, req.lpips_conv, first=True)
        except Exception as exc:
            raise as_gr_error(exc) from None

    def compare_extras(self, *values: Any, progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:
        """Second step in the UI, in two updates: TACO's and ELIC's files checked, MS-SSIM, the
        error maps and the RD chart as soon as those are done, then the rate-matched rows (table,
        RD chart, status, JSON); the first step's codings and scores come from the cache."""
        req = CompareRequest.of(values)
        if not req.image:
            yield (gr.skip(),) * len(EXTRA_OUTPUTS)
            return
        updates: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                updates.put(("final", self.run(
                    req, progress, on_partial=lambda r: updates.put(("partial", r)))))
            except Exception as exc:  # noqa: BLE001 — raised below, in the event's thread
                updates.put(("error", exc))

        # the event's context (Gradio's progress reporting) goes with the work
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(work,), name="taco-extras", daemon=True).start()
        maps: tuple | None = None
        while True:
            kind, item = updates.get()
            if kind == "error":
                raise as_gr_error(item) from None
            out = dict(zip(COMPARE_OUTPUTS, self.present(item, req.view, req.lpips_conv, maps=maps),
                           strict=True))
            maps = (out["err_slider"], out["err_legend"])  # the same TACO and ELIC rows
            yield tuple(out[name] for name in EXTRA_OUTPUTS)
            if kind == "final":
                return

    def compare_on_release(self, *values: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        if not CompareRequest.of(values).image:
            return (gr.skip(),) * len(COMPARE_OUTPUTS)
        return self.compare_fast(*values, progress=progress)

    def validate_compare(self, *values: Any) -> list[dict]:
        req = CompareRequest.of(values)
        target_ok = not req.use_target or (
            req.target_bpp is not None and MIN_TARGET_BPP <= float(req.target_bpp) <= MAX_TARGET_BPP
        )
        checks = {
            "image": (req.image is not None, "Upload an image or pick an example first."),
            "target_bpp": (
                target_ok, f"Target bpp must be between {MIN_TARGET_BPP:g} and {MAX_TARGET_BPP:g}."
            ),
        }
        return [gr.validate(*checks.get(name, (True, ""))) for name in COMPARE_FIELDS]

    def switch_view(self, *values: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        """Change the slider's pair (results come from the cache; recomputed if evicted)."""
        req = CompareRequest.of(values)
        if not req.image:
            return gr.skip(), gr.skip()
        try:
            result = self.run(req, progress,
                              rate_matched=req.rate_matched or req.view in RATE_MATCHED_VIEWS)
        except Exception as exc:
            raise as_gr_error(exc) from None
        return png_files(*slider_pair(result, req.view)), view_note(result, req.view)

    # ------------------------------------------------------------------ small controls

    def token_counter(self, caption: str, model_set: str) -> str:
        return caption_token_markdown(caption, self.pick(model_set), self.backend)

    def rate_line(self, model_set: str, rate: float) -> str:
        return rate_label(self.pick(model_set), rate, self.backend)

    def on_model_set(self, model_set: str, rate: float, caption: str) -> tuple:
        chosen = self.pick(model_set)
        step = slider_step(chosen, self.backend)
        value = round(rate / step) * step if step > 1 else rate
        return (
            gr.Slider(step=step, value=value),
            rate_label(chosen, value, self.backend),
            caption_token_markdown(caption, chosen, self.backend),
        )

    def input_notice(self, image: str | None) -> str:
        return input_notice(image, self.backend)

    def prepare(self, image: str | None, rate: float, use_target: bool, model_set: str,
                lpips_conv: str, *, step: str = "first") -> None:
        """A new image's caption-free work, one step of `app.ui.compare.prepare_image` (the page
        runs the three in turn as an image arrives, while the user writes a caption). Silent:
        what fails here fails again, with its message, when the comparison runs."""
        if not image or use_target or not get_settings().ui_prepare:
            return  # a bpp target's λ is known only after TACO's search
        try:
            convention = lpips_conv if lpips_conv in LPIPS_LABELS else "standard"
            prepare_image(image, rate, step=step, model_set=self.pick(model_set),
                          lpips_convention=convention,  # type: ignore[arg-type]
                          backend=self.backend)
        except Exception as exc:  # noqa: BLE001 — a background warm-up never reaches the page
            log.info("preparing the image (%s) failed; the comparison will say why: %s",
                     step, first_line(exc))

    def prepare_first(self, *values: Any) -> None:
        self.prepare(*values, step="first")

    def prepare_second(self, *values: Any) -> None:
        self.prepare(*values, step="second")

    def prepare_classical(self, *values: Any) -> None:
        self.prepare(*values, step="classical")

    def auto_caption(self, image: str | None, caption: str) -> str:
        if not image:
            gr.Warning("Upload an image first.")
            return caption
        text, message = auto_caption(image, caption, self.backend)
        (gr.Info if text != caption else gr.Warning)(html.escape(message))
        return text

    # ------------------------------------------------------------------ other tabs

    def caption_effect(
        self,
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
            eff = run_caption_effect(
                image,
                caption,
                second,
                rate,
                model_set=self.pick(model_set),
                backend=self.backend,
                progress=progress_fn(progress),
            )
        except Exception as exc:
            raise as_gr_error(exc) from None
        maps = caption_diff_maps(eff)
        legend = colorbar_html(maps.vmax, "|x̂(your caption) − x̂(other caption)|, 8-bit levels")
        return (
            caption_effect_pair(eff, view),
            (maps.vs_empty, maps.vs_second),
            legend,
            caption_effect_frame(eff),
            caption_effect_summary(eff, maps),
        )

    def attention(self, image: str | None, caption: str, model_set: str,
                  word: str | None = None) -> tuple:
        """Heat-map of a caption word over the image, the word list, and the words by mass."""
        try:
            view = run_attention(image, caption, word, self.pick(model_set), self.backend)
        except Exception as exc:
            raise as_gr_error(exc) from None
        return view.overlay, gr.Dropdown(choices=view.words, value=view.word), view.ranking_md

    def _zoom(self, req: CompareRequest, point: tuple[float, float] | None,
              progress: gr.Progress, fraction: bool = False) -> tuple:
        if not req.image:
            raise as_gr_error(TacoError("run a comparison first: the crops come from its results"))
        try:
            result = self.run(req, progress)  # the comparison's cached rows
            h, w = result.image.shape[:2]
            px, py = point if point is not None else (0.5, 0.5) if fraction else (w // 2, h // 2)
            if fraction:  # slider positions in % of the width / height
                px, py = px * (w - 1), py * (h - 1)
            x, y = int(round(px)), int(round(py))
            return mark_box(result.image, x, y), zoom_row(result, x, y)
        except Exception as exc:
            raise as_gr_error(exc) from None

    def zoom(self, image: Any, caption: str, rate: float, use_target: bool,
             target_bpp: float | None, model_set: str, rate_matched: bool, view: str,
             lpips_conv: str, evt: gr.SelectData, progress: gr.Progress = gr.Progress()) -> tuple:
        """Crops around the clicked point of the original, TACO, ELIC and AVIF @ TACO bpp."""
        req = CompareRequest(image, caption, rate, use_target, target_bpp, model_set,
                             rate_matched, view, lpips_conv)
        index = evt.index if isinstance(evt.index, list | tuple) and len(evt.index) == 2 else None
        point = (int(index[0]), int(index[1])) if index is not None else None
        return self._zoom(req, point, progress)

    def zoom_at(self, *values: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        """Crops at the point of the two position sliders (the last two values, in %)."""
        *request, x_pct, y_pct = values
        point = (50.0 if x_pct is None else float(x_pct)) / 100.0, \
            (50.0 if y_pct is None else float(y_pct)) / 100.0
        return self._zoom(CompareRequest.of(request), point, progress, fraction=True)

    @staticmethod
    def cap_side_labels(view: str) -> str:
        right = "Second caption" if "second" in view else "Empty caption"
        return side_labels_html("Your caption", right)

    def decode(self, file: Any) -> tuple:
        """Decode an uploaded .taco file; no caption is involved."""
        try:
            return decode_bitstream(file, self.backend)
        except Exception as exc:
            raise as_gr_error(exc) from None
