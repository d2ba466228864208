"""Headless chromium (Debian's /usr/bin/chromium through playwright's Python package).

Loads the page, clicks an example, and checks that both slider images and the metrics appear.
Skipped cleanly when chromium or playwright is absent. Uses the tiny random models when the
model code is importable (with a small example image so a CPU run stays short), else the fake
backend of test_ui_handlers.py.

Set TACO_UI_SCREENSHOT=path to also save a screenshot of the first screen there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from test_ui_handlers import FAKE_SET, FakeBackend, _tiny_available  # noqa: E402

from app.ui.backend import PackageBackend  # noqa: E402
from app.ui.cache import RESULTS_CACHE  # noqa: E402
from app.ui.examples import Example  # noqa: E402
from app.ui.model_sets import TINY_SET, ModelSet  # noqa: E402

CHROMIUM = os.environ.get("TACO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)),
        reason=f"{CHROMIUM} not installed (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    pytest.importorskip("playwright.sync_api")
    from app.ui.layout import build_demo, launch_kwargs

    tmp = tmp_path_factory.mktemp("browser")
    old = os.environ.get("GRADIO_EXAMPLES_CACHE")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp / "examples-cache")
    RESULTS_CACHE.clear()
    if _tiny_available() is None:
        sets, backend = {TINY_SET.label: TINY_SET}, PackageBackend()
        # a small crop of a shipped photo keeps the random-weight CPU run short
        small = tmp / "coffee_small.png"
        with Image.open(ROOT / "assets" / "coffee.png") as im:
            im.resize((96, 64)).save(small)
        examples = [Example(small, "A small red cup of espresso on a saucer.", "Espresso")]
    else:
        sets, backend, examples = {FAKE_SET.label: FAKE_SET}, FakeBackend(), None
    demo = build_demo(model_sets=sets, backend=backend, examples=examples)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs()
    )
    try:
        yield url
    finally:
        demo.close()
        if old is None:
            os.environ.pop("GRADIO_EXAMPLES_CACHE", None)
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = old


def test_example_runs_and_shows_slider_and_metrics(page_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url)
            page.wait_for_selector("#taco-compare-btn", timeout=120_000)
            assert "TACO" in page.title()

            examples = page.locator(".gallery-item")
            assert examples.count() >= 1
            examples.first.click()

            # both slider images, then a filled metrics table
            page.wait_for_function(
                "document.querySelectorAll('#taco-slider img').length >= 2",
                timeout=300_000,
            )
            page.wait_for_selector("#taco-metrics .table-container:not(.no-rows)", timeout=300_000)
            srcs = [page.locator("#taco-slider img").nth(i).get_attribute("src") for i in range(2)]
            assert all(srcs) and srcs[0] != srcs[1]
            table = page.inner_text("#taco-metrics")
            assert "TACO" in table and "ELIC" in table
            # caption box was filled from the example; status mentions the encoder-only caption
            assert page.locator("#taco-caption textarea").input_value()
            assert "encoder only" in page.inner_text("#taco-status")
            assert not errors, errors

            shot = os.environ.get("TACO_UI_SCREENSHOT")
            if shot:
                page.wait_for_timeout(1500)
                page.screenshot(path=shot)
        finally:
            browser.close()


ROW_COUNT_JS = "document.querySelectorAll('#taco-metrics .virtual-row').length"


def test_page_opens_on_a_finished_example_then_streams_a_request(page_url):
    """Without any click the page shows the first example with its results; pressing Compare
    then shows TACO and ELIC first and the rate-matched rows after (two updates of the table,
    recorded by a MutationObserver however fast they follow each other)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url)
            page.wait_for_selector("#taco-metrics .table-container:not(.no-rows)", timeout=300_000)
            page.wait_for_function("document.querySelectorAll('#taco-slider img').length >= 2",
                                   timeout=300_000)
            assert page.locator("#taco-caption textarea").input_value()
            assert page.locator("#taco-image img").count() >= 1
            full = page.evaluate(ROW_COUNT_JS)
            assert full > 2, page.inner_text("#taco-metrics")  # rate-matched rows included

            page.evaluate("""() => {
                window.__rows = [];
                const root = document.querySelector('#taco-metrics');
                const note = () => {
                    const n = root.querySelectorAll('.virtual-row').length;
                    if (window.__rows[window.__rows.length - 1] !== n) window.__rows.push(n);
                };
                new MutationObserver(note).observe(root, {childList: true, subtree: true});
            }""")
            page.locator("#taco-caption textarea").fill("a different caption for this photo")
            page.locator("#taco-compare-btn").click()
            page.wait_for_function(
                f"window.__rows.includes(2) && window.__rows[window.__rows.length - 1] >= {full}",
                timeout=300_000,
            )
            seen = page.evaluate("window.__rows")
            assert seen.index(2) < len(seen) - 1, seen  # TACO + ELIC came before the full table
            assert not errors, errors
        finally:
            browser.close()


def test_attention_and_zoom_tabs_render(page_url):
    """After an example: the caption-attention tab draws the heat-map of the most attended word
    and lists the words by attention share; the zoom tab shows the crops of the same comparison."""
    if _tiny_available() is not None:
        pytest.skip("the attention maps need the tiny TACO (model code not importable)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url)
            page.wait_for_selector("#taco-compare-btn", timeout=120_000)
            page.locator(".gallery-item").first.click()
            page.wait_for_selector("#taco-metrics .table-container:not(.no-rows)", timeout=300_000)
            page.get_by_role("tab", name="Caption attention").click()
            page.get_by_role("button", name="Show where the encoder looks").click()
            page.wait_for_selector("#taco-att-image img", timeout=300_000)
            page.wait_for_function(
                "document.querySelector('#taco-att-rank') && "
                "document.querySelector('#taco-att-rank').innerText.includes('%')",
                timeout=120_000,
            )
            ranking = page.inner_text("#taco-att-rank")
            assert "espresso" in ranking.lower() and "padding" in ranking, ranking
            assert page.locator("#taco-att-image img").get_attribute("src")
            # the zoom tab: crops of the same comparison, then a click on the source image
            page.get_by_role("tab", name="Zoom").click()
            page.get_by_role("button", name="Show the crops").click()
            page.wait_for_selector("#taco-zoom img", timeout=300_000)
            assert page.locator("#taco-zoom img").get_attribute("src")
            assert page.locator("#taco-zoom-src img").get_attribute("src")
            assert not errors, errors
        finally:
            browser.close()


def test_an_example_picked_while_the_opening_one_computes_is_what_the_page_shows(tmp_path,
                                                                                 monkeypatch):
    """The page-load event fills in the opening example's results only; an example clicked while
    they are still being computed keeps its own image and caption, and its results come last."""
    pytest.importorskip("playwright.sync_api")
    import time

    from playwright.sync_api import sync_playwright

    from app.ui.events import Callbacks
    from app.ui.examples import load_examples
    from app.ui.layout import build_demo, launch_kwargs

    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "examples-cache"))
    RESULTS_CACHE.clear()
    examples = load_examples()[:3]
    assert len(examples) == 3
    original_run = Callbacks.run
    first: list[int] = []

    def slow_first_run(self, *args, **kwargs):
        if not first:  # the opening example, computed by the page-load event
            first.append(1)
            time.sleep(4)
        return original_run(self, *args, **kwargs)

    monkeypatch.setattr(Callbacks, "run", slow_first_run)
    demo = build_demo(model_sets={FAKE_SET.label: FAKE_SET}, backend=FakeBackend(),
                      examples=examples)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                            **launch_kwargs())
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.goto(url)
                page.wait_for_selector("#taco-examples .gallery-item", timeout=120_000)
                assert page.locator("#taco-caption textarea").input_value() == examples[0].caption
                page.locator("#taco-examples .gallery-item").nth(2).click()  # during the 4 s
                want = examples[2].caption
                page.wait_for_function(
                    "t => document.querySelector('#taco-status') &&"
                    " document.querySelector('#taco-status').innerText.includes(t)",
                    arg=want[:60], timeout=120_000)
                page.wait_for_timeout(6000)  # the opening example's results have arrived by now
                assert first, "the opening example was not computed"
                assert page.locator("#taco-caption textarea").input_value() == want
                assert want[:60] in page.inner_text("#taco-status")
            finally:
                browser.close()
    finally:
        demo.close()


# ------------------------------------------------------------------------------------------------
# Screenshot for docs/: `python tests/test_ui_browser.py docs/screenshot.png [--stand-in]`
# (`--attention`: the caption-attention tab after the example, e.g. docs/attention.png;
#  `--first-step`: the page after a new Compare's first step, e.g. docs/first_step.png)
# (default: the shipped models and examples; --stand-in: the fake quantiser codecs, layout only)
# ------------------------------------------------------------------------------------------------


def take_screenshot(out: str, stand_in: bool = False, example: int = 1, height: int = 1240,
                    attention: bool = False, first_step: bool = False) -> None:
    import tempfile

    from playwright.sync_api import sync_playwright

    from app.ui.layout import build_demo, launch_kwargs

    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", tempfile.mkdtemp(prefix="taco-shot-"))
    if stand_in:
        backend = FakeBackend()
        for codec in backend.codecs.values():
            codec.description = "stand-in quantiser"
        model_set = ModelSet("Layout preview (stand-in codecs)", "taco-fake", "elic-fake", True)
        demo = build_demo(model_sets={model_set.label: model_set}, backend=backend)
    else:
        demo = build_demo()
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs()
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": height})
            page.goto(url)
            page.wait_for_selector("#taco-compare-btn", timeout=120_000)
            page.locator(".gallery-item").nth(example).click()
            page.wait_for_selector("#taco-metrics .table-container:not(.no-rows)", timeout=900_000)
            page.wait_for_timeout(4000)
            if first_step:  # a new caption, Compare, and the page as the first step leaves it
                page.locator("#taco-caption textarea").fill("an old pagoda above a lake")
                page.locator("#taco-compare-btn").click()
                page.wait_for_function(f"{ROW_COUNT_JS} === 2", timeout=900_000)
                page.evaluate("window.scrollTo(0, 0)")
            if attention:
                page.get_by_role("tab", name="Caption attention").click()
                page.get_by_role("button", name="Show where the encoder looks").click()
                page.wait_for_selector("#taco-att-image img", timeout=900_000)
                page.wait_for_timeout(2000)
                page.locator("#taco-att-image").scroll_into_view_if_needed()
            page.screenshot(path=out)
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    import sys

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    take_screenshot(args[0] if args else "docs/screenshot.png", "--stand-in" in sys.argv,
                    attention="--attention" in sys.argv, first_step="--first-step" in sys.argv)
