"""The `/compare` API through gradio_client against a local launch of the demo.

Uses the tiny random models when the model code is importable, else the fake backend of
test_ui_handlers.py (same handlers, same Gradio wiring).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from test_ui_handlers import FAKE_SET, FakeBackend, _tiny_available, photo  # noqa: E402

from app.ui.backend import PackageBackend  # noqa: E402
from app.ui.cache import RESULTS_CACHE  # noqa: E402
from app.ui.model_sets import TINY_SET  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, model set label, backend) of a launched demo; closed after the module."""
    import gradio as gr  # noqa: F401

    from app.ui.layout import build_demo

    cache = tmp_path_factory.mktemp("examples-cache")
    old = os.environ.get("GRADIO_EXAMPLES_CACHE")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(cache)
    RESULTS_CACHE.clear()
    if _tiny_available() is None:
        sets, backend = {TINY_SET.label: TINY_SET}, PackageBackend()
    else:
        sets, backend = {FAKE_SET.label: FAKE_SET}, FakeBackend()
    demo = build_demo(model_sets=sets, backend=backend)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True
    )
    try:
        yield url, next(iter(sets)), backend
    finally:
        demo.close()
        if old is None:
            os.environ.pop("GRADIO_EXAMPLES_CACHE", None)
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = old


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    url, _, _ = served
    return Client(url, verbose=False)


@pytest.fixture()
def image_file(tmp_path: Path) -> str:
    p = tmp_path / "client.png"
    Image.fromarray(photo(64, 96, seed=3)).save(p)
    return str(p)


def test_compare_endpoint_is_documented(client):
    api = client.view_api(print_info=False, return_format="dict")
    names = set(api["named_endpoints"])
    assert "/compare" in names and "/decode" in names and "/caption_effect" in names
    params = [p["parameter_name"] for p in api["named_endpoints"]["/compare"]["parameters"]]
    assert params[:3] == ["image", "caption", "rate"]
    # the UI's internal two-step events are not part of the public API
    assert not any("compare_fast" in n or "compare_extras" in n for n in names)
    assert "/rate_line" not in names and "/switch_view" not in names


def test_compare_via_client(served, client, image_file):
    from gradio_client import handle_file

    _, label, _ = served
    out = client.predict(
        handle_file(image_file),
        "a colourful test pattern",
        60,
        False,
        0.3,
        label,
        True,
        "TACO | ELIC",
        "standard",
        api_name="/compare",
    )
    slider, table, err, legend, plot, files, status, numbers = out
    taco_file = files[0] if isinstance(files[0], str) else files[0]["path"]
    # the slider comes back as two PNG files (lossless), the exact reconstructions
    assert len(slider) == 2
    left = slider[0] if isinstance(slider[0], str) else slider[0]["path"]
    assert left.endswith(".png")
    with Image.open(left) as im:
        assert im.size == (96, 64)
    assert taco_file.endswith(".taco") and Path(taco_file).stat().st_size > 0
    assert table["headers"][0] == "Codec"
    codecs = [row[0] for row in table["data"]]
    assert codecs[:3] == ["TACO", "ELIC (same λ)", "ELIC @ TACO bpp"]
    assert "JPEG @ TACO bpp" in codecs
    recs = numbers if isinstance(numbers, list) else json.loads(numbers)
    assert recs[0]["codec"] == "taco"
    assert recs[0]["bpp"] == pytest.approx(8 * Path(taco_file).stat().st_size / (96 * 64))
    assert "encoder only" in status
    assert "linear-gradient" in legend
    err_left = err[0] if isinstance(err[0], str) else err[0]["path"]
    assert err_left.endswith(".png")


def test_compare_defaults_and_decode_roundtrip(served, client, image_file):
    from gradio_client import handle_file

    out = client.predict(handle_file(image_file), "", 20, rate_matched=False, api_name="/compare")
    slider, taco_file = out[0], out[5][0]
    assert [row[0] for row in out[1]["data"]] == ["TACO", "ELIC (same λ)"]
    decoded, info = client.predict(handle_file(taco_file), api_name="/decode")
    with Image.open(decoded) as a, Image.open(slider[0]) as b:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert "without any caption" in info


def test_compare_without_image_is_a_clean_error(client):
    from gradio_client.exceptions import AppError

    with pytest.raises((AppError, ValueError, Exception)) as info:
        client.predict(None, "x", 50, api_name="/compare")
    assert "Traceback" not in str(info.value)


def test_caption_effect_via_client(served, client, image_file):
    from gradio_client import handle_file

    _, label, _ = served
    out = client.predict(
        handle_file(image_file),
        "a colourful pattern",
        "a cat on a sofa",
        50,
        label,
        "Your caption | empty caption",
        api_name="/caption_effect",
    )
    pair, diffs, legend, table, summary = out
    assert len(pair) == 2 and len(diffs) == 2
    assert [row[0] for row in table["data"]] == ["Your caption", "Empty caption", "Second caption"]
    assert "only the caption changes" in summary
