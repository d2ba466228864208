"""Work started when an image arrives (`app.ui.compare.prepare_image`), the single-flight results
cache it relies on, and the first answer that leaves the error maps and the RD chart to the second.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from test_ui_handlers import FAKE_SET, FakeBackend, photo  # noqa: E402

from app.errors import TacoError  # noqa: E402
from app.lru import LRUCache  # noqa: E402
from app.ui.cache import RESULTS_CACHE  # noqa: E402
from app.ui.compare import PREPARE_STEPS, prepare_image, run_compare  # noqa: E402
from app.ui.events import COMPARE_FIELDS, COMPARE_OUTPUTS, EXTRA_OUTPUTS, Callbacks  # noqa: E402
from app.ui.model_sets import TINY_SET  # noqa: E402


@pytest.fixture()
def fake() -> FakeBackend:
    RESULTS_CACHE.clear()
    return FakeBackend()


@pytest.fixture()
def img_path(tmp_path) -> str:
    p = tmp_path / "upload.png"
    Image.fromarray(photo(64, 96, seed=5)).save(p)
    return str(p)


def test_get_or_make_makes_a_value_once_for_concurrent_askers():
    cache = LRUCache(4)
    made, started = [], threading.Event()

    def make():
        started.set()
        time.sleep(0.2)
        made.append(1)
        return "value"

    results = []
    first = threading.Thread(target=lambda: results.append(cache.get_or_make("k", make)))
    first.start()
    started.wait(5)
    results.append(cache.get_or_make("k", make))  # asks while the first thread is making it
    first.join(5)
    assert results == ["value", "value"] and made == [1]
    assert cache.get_or_make("k", make) == "value" and made == [1]


def test_get_or_make_stores_nothing_when_making_fails():
    cache = LRUCache(4)

    def broken():
        raise TacoError("no")

    with pytest.raises(TacoError):
        cache.get_or_make("k", broken)
    assert cache.get("k") is None
    assert cache.get_or_make("k", lambda: 3) == 3


def test_contains_neither_uses_an_entry_nor_counts():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    hits, misses = cache.hits, cache.misses
    assert "a" in cache and "c" not in cache
    assert (cache.hits, cache.misses) == (hits, misses)
    cache.put("c", 3)  # "a" is still the oldest: a membership test did not refresh it
    assert "a" not in cache and "b" in cache


def test_elic_is_not_coded_again_for_a_new_caption(fake, img_path):
    """ELIC never reads the caption, so a new caption reuses its row."""
    run_compare(img_path, "one caption", 40, model_set=FAKE_SET, backend=fake)
    taco, elic = fake.codecs["taco-fake"].calls, fake.codecs["elic-fake"].calls
    run_compare(img_path, "another caption", 40, model_set=FAKE_SET, backend=fake)
    assert fake.codecs["taco-fake"].calls == taco + 1
    assert fake.codecs["elic-fake"].calls == elic


def test_prepared_image_leaves_only_taco_to_the_press(fake, img_path):
    """After the preparation the first step codes only TACO, the second step's ELIC row is
    served too, and the results are those of a comparison without preparation."""
    cold = run_compare(img_path, "cap", 40, model_set=FAKE_SET, backend=fake, rate_matched=True)
    RESULTS_CACHE.clear()
    for step in PREPARE_STEPS:
        assert prepare_image(img_path, 40, step=step, model_set=FAKE_SET, backend=fake)
    elic = fake.codecs["elic-fake"].calls
    taco = fake.codecs["taco-fake"].calls
    first = run_compare(img_path, "cap", 40, model_set=FAKE_SET, backend=fake, ms_ssim=False,
                        early=True)
    assert fake.codecs["elic-fake"].calls == elic and fake.codecs["taco-fake"].calls == taco + 1
    full = run_compare(img_path, "cap", 40, model_set=FAKE_SET, backend=fake, rate_matched=True)
    assert [r.row_id for r in full.runs] == [r.row_id for r in cold.runs]
    for a, b in zip(cold.runs, full.runs, strict=True):
        assert (a.data, a.psnr, a.lpips, a.ms_ssim) == (b.data, b.psnr, b.lpips, b.ms_ssim)
        np.testing.assert_array_equal(a.recon, b.recon)
    assert [r.data for r in first.runs] == [r.data for r in full.runs[:2]]


def test_prepare_rejects_an_unknown_step_and_passes_bad_input_on(fake, img_path, tmp_path):
    with pytest.raises(TacoError, match="unknown preparation step"):
        prepare_image(img_path, step="everything", model_set=FAKE_SET, backend=fake)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(TacoError):
        prepare_image(str(bad), model_set=FAKE_SET, backend=fake)


def test_prepare_callback_is_silent_and_skips_what_it_cannot_know(fake, img_path, tmp_path,
                                                                   monkeypatch):
    cb = Callbacks(fake, {FAKE_SET.label: FAKE_SET}, [])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    cb.prepare_first(str(bad), 40, False, FAKE_SET.label, "standard")  # no exception
    cb.prepare_first(None, 40, False, FAKE_SET.label, "standard")
    cb.prepare_first(img_path, 40, True, FAKE_SET.label, "standard")  # bpp target: λ unknown
    assert fake.codecs["elic-fake"].calls == 0
    from app.settings import use_settings

    with use_settings(ui_prepare=False):
        cb.prepare_first(img_path, 40, False, FAKE_SET.label, "standard")
        assert fake.codecs["elic-fake"].calls == 0
    cb.prepare_first(img_path, 40, False, FAKE_SET.label, "standard")
    assert fake.codecs["elic-fake"].calls == 1


def test_first_answer_leaves_maps_and_chart_to_the_second(fake, img_path):
    cb = Callbacks(fake, {FAKE_SET.label: FAKE_SET}, [])
    values = dict(image=img_path, caption="cap", rate=40, use_target=False, target_bpp=0.3,
                  model_set=FAKE_SET.label, rate_matched=True, view="TACO | ELIC",
                  lpips_conv="standard")
    args = [values[f] for f in COMPARE_FIELDS]
    first = dict(zip(COMPARE_OUTPUTS, cb.compare_fast(*args, progress=lambda *a, **k: None),
                     strict=True))
    assert first["err_slider"] is None and first["err_legend"] == "" and first["rd_plot"] is None
    assert first["slider"] is not None and len(first["bitstreams"]) == 2
    updates = [dict(zip(EXTRA_OUTPUTS, u, strict=True))
               for u in cb.compare_extras(*args, progress=lambda *a, **k: None)]
    assert {"err_slider", "err_legend", "rd_plot"} <= set(EXTRA_OUTPUTS)
    # two updates: TACO and ELIC checked with their maps and chart, then the rate-matched rows
    assert len(updates) == 2
    partial, final = updates
    assert partial["err_slider"] is not None and partial["rd_plot"] is not None
    assert list(partial["table"]["Codec"]) == ["TACO", "ELIC (same λ)"]
    assert "searching ELIC λ" in partial["status"] and "done in" in final["status"]
    assert "ELIC @ TACO bpp" in final["table"].to_string()
    assert final["err_slider"] == partial["err_slider"]  # the same maps, not made twice


def test_page_wires_the_preparation_to_a_new_image(fake):
    from app.ui.layout import build_demo

    demo = build_demo(model_sets={FAKE_SET.label: FAKE_SET}, backend=fake)
    names = [getattr(fn.fn, "__name__", "") for fn in demo.fns.values()]
    steps = [n for n in names if n.startswith("prepare_")]
    assert steps == ["prepare_first", "prepare_second", "prepare_classical"]


def test_tiny_models_prepared_and_cold_comparisons_agree(tmp_path):
    """The real package (tiny random models): preparing the image changes no number or byte."""
    from app.codecs import load_codec
    from app.codecs.classical import get_classical_codec
    from app.ui.backend import PackageBackend

    try:
        load_codec("taco-tiny", allow_random=True)
        load_codec("elic-tiny", allow_random=True)
    except Exception as exc:  # pragma: no cover - model code unavailable
        pytest.skip(f"tiny models unavailable: {exc}")
    backend = PackageBackend()
    img = tmp_path / "tiny.png"
    Image.fromarray(photo(64, 96, seed=9)).save(img)

    def forget():
        RESULTS_CACHE.clear()
        for name in ("jpeg", "webp", "avif"):
            get_classical_codec(name).forget_images()
        for name in ("taco-tiny", "elic-tiny"):
            load_codec(name, allow_random=True).forget_images()

    forget()
    cold = run_compare(str(img), "a pattern", 50, model_set=TINY_SET, backend=backend,
                       rate_matched=True)
    forget()
    for step in PREPARE_STEPS:
        prepare_image(str(img), 50, step=step, model_set=TINY_SET, backend=backend)
    warm = run_compare(str(img), "a pattern", 50, model_set=TINY_SET, backend=backend,
                       rate_matched=True)
    assert [r.row_id for r in warm.runs] == [r.row_id for r in cold.runs]
    for a, b in zip(cold.runs, warm.runs, strict=True):
        assert a.data == b.data and (a.psnr, a.lpips) == (b.psnr, b.lpips), a.row_id
        np.testing.assert_array_equal(a.recon, b.recon)
    forget()


def test_png_files_are_lossless_and_named_by_content(tmp_path):
    from app.ui.present import png_files

    a, b = photo(32, 48, seed=1), photo(32, 48, seed=2)
    pa, pb, pa2 = png_files(a, b, a, out_dir=tmp_path)
    assert pa == pa2 and pa != pb
    np.testing.assert_array_equal(np.asarray(Image.open(pa)), a)
    np.testing.assert_array_equal(np.asarray(Image.open(pb)), b)


def test_opening_example_is_presented_again_when_its_files_were_pruned(fake, img_path):
    cb = Callbacks(fake, {FAKE_SET.label: FAKE_SET}, [])
    values = dict(image=img_path, caption="cap", rate=40, use_target=False, target_bpp=0.3,
                  model_set=FAKE_SET.label, rate_matched=False, view="TACO | ELIC",
                  lpips_conv="standard")
    cb.set_start_example([values[f] for f in COMPARE_FIELDS])
    first = dict(zip(COMPARE_OUTPUTS, cb.start_outputs(), strict=True))
    assert cb.start_outputs() is cb.start_outputs()  # kept
    for p in first["slider"]:
        os.unlink(p)
    again = dict(zip(COMPARE_OUTPUTS, cb.start_outputs(), strict=True))
    assert all(os.path.isfile(p) for p in again["slider"])
    assert again["slider"] == first["slider"]  # the same content, the same names
