#!/usr/bin/env python
"""What a user of the page waits for, timed in a real browser (Debian's headless chromium).

The demo runs with the shipped models on 127.0.0.1; for each image the script uploads it into
the page, writes a caption, and presses "Compress with TACO and ELIC", either after waiting
``--think`` seconds (a user writing a caption, long enough for the upload's preparation) or at
once. It records, from the click, when the metrics table first shows TACO and ELIC (the first
step), when the error maps are back (the second step's first update) and when the table shows
the rate-matched rows too (its last), with MutationObservers in the page, so everything the page does is in the number: queueing, the event stream, image encoding
and rendering. Each image is new to the server (its caches start empty for it).

Browser and server share this machine's cores here, which a user's browser does not: chromium
runs at the lowest CPU priority (``nice -n 19``; ``--browser-priority same`` to leave it as is),
so it renders in the time the server leaves, as a browser on another machine would.

    .venv/bin/python scripts/browser_timing.py ../shared/data/kodak/kodim{14,05,23,21,08}.png

Prints one JSON line per press and a summary (medians) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

OBSERVE_JS = """() => {
    window.__t = [];  // [time, rows in the metrics table]
    window.__m = [];  // [time, images in the error-map slider]
    const watch = (sel, count, log) => {
        const root = document.querySelector(sel);
        const note = () => {
            const n = root.querySelectorAll(count).length;
            const last = log[log.length - 1];
            if (!last || last[1] !== n) log.push([performance.now(), n]);
        };
        new MutationObserver(note).observe(root, {childList: true, subtree: true,
                                                  attributes: true});
    };
    watch('#taco-metrics', '.virtual-row', window.__t);
    watch('#taco-errors', 'img[src]', window.__m);
}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="images to upload, one press each")
    parser.add_argument("--think", type=float, default=4.0,
                        help="seconds between upload and press in the 'after' presses")
    parser.add_argument("--caption", default="a photo with a caption written by hand")
    parser.add_argument("--browser-priority", choices=("low", "same"), default="low")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright
    from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, ROW_COUNT_JS

    from app.bench import compare_image
    from app.images import to_rgb_array
    from app.ui.layout import build_demo, launch_kwargs

    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", tempfile.mkdtemp(prefix="taco-timing-"))
    tmp = Path(tempfile.mkdtemp(prefix="taco-uploads-"))
    from PIL import Image

    chromium = CHROMIUM
    if args.browser_priority == "low":
        wrapper = tmp / "chromium-nice"
        wrapper.write_text(f'#!/bin/sh\nexec nice -n 19 {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        chromium = str(wrapper)
    demo = build_demo()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                            **launch_kwargs())
    rows: list[dict] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(url)
            page.wait_for_selector("#taco-metrics .table-container:not(.no-rows)",
                                   timeout=900_000)
            full_rows = page.evaluate(ROW_COUNT_JS)
            for i, src in enumerate(args.images):
                for mode in ("after", "at_once"):
                    # a new file (one pixel changed) for each press: new to every cache
                    arr = compare_image(to_rgb_array(Image.open(src))).copy()
                    arr[0, 0, 0] ^= 1 + (mode == "at_once")
                    path = tmp / f"{Path(src).stem}-{mode}.png"
                    Image.fromarray(arr).save(path)
                    page.locator("#taco-image input[type=file]").set_input_files(str(path))
                    page.wait_for_function(
                        "document.querySelector('#taco-image img') !== null", timeout=60_000)
                    page.locator("#taco-caption textarea").fill(f"{args.caption} {i} {mode}")
                    if mode == "after":
                        time.sleep(args.think)
                    page.evaluate(OBSERVE_JS)
                    t0 = page.evaluate("performance.now()")
                    page.locator("#taco-compare-btn").click()
                    page.wait_for_function(
                        "window.__t.some(e => e[1] === 2) && "
                        f"window.__t[window.__t.length - 1][1] >= {full_rows}",
                        timeout=900_000)
                    marks = page.evaluate("window.__t")
                    first = next(t for t, n in marks if n == 2) - t0
                    full = next(t for t, n in marks if n >= full_rows and t - t0 >= first) - t0
                    # the maps the first step cleared, shown again by the second
                    maps = next((t - t0 for t, n in page.evaluate("window.__m")
                                 if n >= 2 and t - t0 >= first), None)
                    row = {"image": Path(src).name, "press": mode,
                           "first_s": round(first / 1e3, 3),
                           "maps_s": None if maps is None else round(maps / 1e3, 3),
                           "full_s": round(full / 1e3, 3)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    time.sleep(1.0)
            browser.close()
    finally:
        demo.close()
    for mode in ("after", "at_once"):
        got = [r for r in rows if r["press"] == mode]
        maps = [r["maps_s"] for r in got if r["maps_s"] is not None]
        print(json.dumps({"press": mode, "n": len(got),
                          "first_median_s": statistics.median(r["first_s"] for r in got),
                          "maps_median_s": statistics.median(maps) if maps else None,
                          "full_median_s": statistics.median(r["full_s"] for r in got)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
