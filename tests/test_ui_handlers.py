"""The demo's service functions called directly (no Gradio server): app/ui/* and app/ui/plots.py.

Two backends:
- `FakeBackend`: deterministic stand-in codecs (quantisers whose output depends on λ and on the
  caption) with the package's real image loader. Fast, and independent of the model code.
- the real package with the tiny random models ("taco-tiny" / "elic-tiny", allow_random=True),
  used when the model code is importable (skipped otherwise).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.codecs.protocol import Capabilities, Encoded, RateControl  # noqa: E402
from app.display import fmt  # noqa: E402
from app.errors import (  # noqa: E402
    BitstreamError,
    ImageInputError,
    MissingModelError,
    TacoError,
    first_line,  # noqa: E402
)
from app.settings import Settings, get_settings  # noqa: E402
from app.ui import plots  # noqa: E402
from app.ui.backend import Backend, PackageBackend  # noqa: E402
from app.ui.cache import RESULTS_CACHE, LRUCache  # noqa: E402
from app.ui.caption_effect import (  # noqa: E402
    CAPTION_COLUMNS,
    CAPTION_EFFECT_NOTE,
    CAPTION_ROWS,
    caption_diff_maps,
    caption_effect_frame,
    caption_effect_pair,
    caption_effect_rows,
    caption_effect_summary,
    run_caption_effect,
)
from app.ui.captions import auto_caption, caption_token_markdown  # noqa: E402
from app.ui.compare import input_notice, run_compare  # noqa: E402
from app.ui.decode_tab import decode_bitstream  # noqa: E402
from app.ui.defaults import max_side  # noqa: E402
from app.ui.examples import examples_cache_tag, load_examples  # noqa: E402
from app.ui.model_sets import (  # noqa: E402
    EMBEDDED_FALLBACK,
    TINY_SET,
    ModelSet,
    missing_weights_notice,
    pick_model_set,
    resolve_model_sets,
)
from app.ui.present import (  # noqa: E402
    HEAT_LUT,
    METRIC_COLUMNS,
    abs_diff,
    colorbar_html,
    colorize,
    download_label,
    error_maps,
    metrics_frame,
    metrics_records,
    slider_pair,
    status_markdown,
    view_note,
    write_bitstreams,
)
from app.ui.rate import RateSpec  # noqa: E402
from app.ui.references import (  # noqa: E402
    PUBLISHED_CURVES,
    load_reference_curves,
    parse_reference_json,
    rd_points,
)

ROOT = Path(__file__).resolve().parents[1]

# =============================================================================================
# A fake backend: quantiser "codecs" with a real byte format
# =============================================================================================

_MAGIC = b"FAKE"


@dataclass
class FakeHeader:
    model_id: str
    fingerprint: bytes
    lmbda: float | None
    height: int
    width: int
    version: int = 2
    coding: str = "portable"


def _pack(name: str, lmbda: float, arr: np.ndarray) -> bytes:
    meta = json.dumps({"m": name, "l": lmbda, "h": arr.shape[0], "w": arr.shape[1]}).encode()
    return _MAGIC + struct.pack(">H", len(meta)) + meta + zlib.compress(arr.tobytes(), 1)


def _unpack(data: bytes) -> tuple[dict, np.ndarray]:
    if len(data) < 6 or data[:4] != _MAGIC:
        raise BitstreamError("not a fake bitstream")
    n = struct.unpack(">H", data[4:6])[0]
    meta = json.loads(data[6 : 6 + n])
    try:
        raw = zlib.decompress(data[6 + n :])
    except zlib.error:
        raise BitstreamError("corrupted fake bitstream") from None
    return meta, np.frombuffer(raw, np.uint8).reshape(meta["h"], meta["w"], 3)


class FakeCodec:
    """Quantises with a step that shrinks as λ grows; TACO's step also depends on the caption."""

    def __init__(self, name: str, rate_range=(1e-3, 1e-1), ladder=None, text: bool = False):
        self.name = name
        self.rate_range = None if ladder else rate_range
        self.rate_ladder = ladder
        self.description = f"fake {name}"
        rate = RateControl.of_ladder(ladder) if ladder else RateControl.continuous(*rate_range)
        self.capabilities = Capabilities(
            learned=True, rate=rate, random_weights=True, text_encoder="minilm" if text else None
        )
        self.text = text
        self.calls = 0

    def _step(self, lmbda: float, caption: str) -> int:
        step = int(round(4 + 60 * (1 - math.log(lmbda / 1e-3) / math.log(100))))
        if self.text and caption:
            step += int(hashlib.sha1(caption.encode()).hexdigest(), 16) % 3
        return max(1, step)

    def compress(self, image, caption: str = "", lmbda=None, target_bpp=None) -> bytes:
        self.calls += 1
        arr = np.asarray(image, dtype=np.uint8)
        if target_bpp is not None:
            best = None
            for lam in np.geomspace(1e-3, 1e-1, 7):
                data = self.compress(arr, caption, float(lam))
                bpp = 8 * len(data) / (arr.shape[0] * arr.shape[1])
                if best is None or abs(bpp - target_bpp) < best[0]:
                    best = (abs(bpp - target_bpp), data)
            return best[1]
        lam = 1e-2 if lmbda is None else float(lmbda)
        step = self._step(lam, caption)
        q = (arr.astype(np.int32) // step * step + step // 2).clip(0, 255).astype(np.uint8)
        return _pack(self.name, lam, q)

    def encode(self, image, caption: str = "", lmbda=None, target_bpp=None) -> Encoded:
        arr = np.asarray(image, dtype=np.uint8)
        data = self.compress(arr, caption, lmbda, target_bpp)
        return Encoded(data, arr.shape[0], arr.shape[1], _unpack(data)[0]["l"], 0.0)

    def decompress(self, data: bytes) -> Image.Image:
        _, arr = _unpack(data)
        return Image.fromarray(arr.copy(), "RGB")

    def decompress_float(self, data: bytes) -> np.ndarray:
        return np.asarray(self.decompress(data), dtype=np.float32) / 255.0

    def fingerprint(self, lmbda=None) -> bytes:
        return b"\x00" * 8


@dataclass
class FakeTokenInfo:
    n_tokens: int
    max_len: int
    truncated: bool
    kept_text: str


class FakeBackend:
    """Fake codecs and metrics; the real `app.images.prepare_image`."""

    def __init__(self, with_elic: bool = True, caption_ok: bool = False):
        self.codecs = {
            "taco-fake": FakeCodec("taco-fake", text=True),
            "elic-fake": FakeCodec("elic-fake"),
            "taco-ladder": FakeCodec("taco-ladder", ladder=[0.002, 0.008, 0.03, 0.09], text=True),
        }
        self.with_elic = with_elic
        self.caption_ok = caption_ok
        self.classical = {n: FakeCodec(n) for n in ("jpeg", "webp")}

    def load_codec(self, name: str, allow_random: bool = False):
        if name == "elic-fake" and not self.with_elic:
            raise MissingModelError("elic-fake weights are missing")
        if name not in self.codecs:
            raise MissingModelError(f"no codec {name}")
        return self.codecs[name]

    def classical_codec(self, name: str):
        if name not in self.classical:
            raise MissingModelError(f"{name} encoder is not installed")
        return self.classical[name]

    def prepare_image(self, obj, max_side: int):
        from app.images import prepare_image

        return prepare_image(obj, max_side=max_side)

    def psnr(self, a, b) -> float:
        mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
        return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)

    def ms_ssim(self, a, b) -> float:
        return 1.0 - float(np.mean(np.abs(a.astype(float) - b.astype(float)))) / 255.0

    def lpips(self, a, b, convention: str) -> float:
        d = float(np.mean(np.abs(a.astype(float) - b.astype(float)))) / 255.0
        return d if convention == "standard" else d / 2

    def token_info(self, kind: str, caption: str):
        n = len(caption.split()) + 2
        return FakeTokenInfo(n, 38, n > 38, " ".join(caption.split()[:36]))

    def clean_caption(self, caption: str) -> str:
        return " ".join((caption or "").split())

    def captioner_available(self):
        return (True, "") if self.caption_ok else (False, "BLIP weights are not available offline")

    def caption_image(self, image) -> str:
        return "a fake caption of a picture"

    def decompress(self, data: bytes) -> Image.Image:
        meta, _ = _unpack(data)
        return self.codecs[meta["m"]].decompress(data)

    def decompress_untrusted(self, data: bytes) -> Image.Image:
        return self.decompress(data)

    def read_header(self, data: bytes) -> FakeHeader:
        meta, _ = _unpack(data)
        return FakeHeader(meta["m"], b"\x00" * 8, meta["l"], meta["h"], meta["w"])

    def available_model_sets(self):
        return {"Fake": {"taco": "taco-fake", "elic": "elic-fake"}}


FAKE_SET = ModelSet("Fake", "taco-fake", "elic-fake")
LADDER_SET = ModelSet("Fake ladder", "taco-ladder", "elic-fake")


def photo(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth synthetic photo-like image (gradients + a few blobs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [
            128 + 100 * np.sin(x / 17.0 + seed),
            128 + 90 * np.cos(y / 13.0),
            128 + 80 * np.sin((x + y) / 23.0),
        ],
        axis=2,
    )
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture()
def fake() -> FakeBackend:
    RESULTS_CACHE.clear()
    return FakeBackend()


@pytest.fixture()
def img_path(tmp_path: Path) -> str:
    p = tmp_path / "my photo.png"
    Image.fromarray(photo()).save(p)
    return str(p)


# =============================================================================================
# Rate control
# =============================================================================================


def test_rate_spec_continuous_is_log_uniform_and_monotone():
    spec = RateSpec("continuous", 1e-3, 1e-1)
    assert spec.lmbda_at(0) == pytest.approx(1e-3)
    assert spec.lmbda_at(100) == pytest.approx(1e-1)
    assert spec.lmbda_at(50) == pytest.approx(1e-2, rel=1e-2)
    lams = [spec.lmbda_at(p) for p in range(0, 101, 5)]
    assert lams == sorted(lams)
    assert spec.lmbda_at(-20) == spec.lmbda_at(0) and spec.lmbda_at(500) == spec.lmbda_at(100)
    assert spec.step == 1
    assert spec.fit(5.0) == 1e-1 and spec.fit(None) is None
    assert "λ = 0.01" in spec.describe(50)


def test_rate_spec_ladder_snaps_to_rungs():
    ladder = (0.0004, 0.0008, 0.0016, 0.004, 0.009, 0.015)
    spec = RateSpec("ladder", ladder=ladder)
    assert spec.step == pytest.approx(20.0)
    assert [spec.lmbda_at(p) for p in (0, 20, 40, 60, 80, 100)] == list(ladder)
    assert spec.lmbda_at(9) == 0.0004 and spec.lmbda_at(11) == 0.0008
    assert spec.fit(0.005) == 0.004
    assert "fixed-rate" in spec.describe(0)


def test_rate_spec_of_codec():
    assert RateSpec.of(FakeCodec("a")).kind == "continuous"
    assert RateSpec.of(FakeCodec("b", ladder=[0.1, 0.01])).ladder == (0.01, 0.1)
    from app.codecs.classical import get_classical_codec

    jpeg = RateSpec.of(get_classical_codec("jpeg"))  # a quality range reads as a continuous one
    assert (jpeg.kind, jpeg.lo, jpeg.hi) == ("continuous", 1.0, 100.0)
    assert RateSpec("none").lmbda_at(50) is None


# =============================================================================================
# Model sets
# =============================================================================================


def test_model_sets_tiny_env_and_fallback():
    sets = resolve_model_sets(FakeBackend(), settings=Settings.from_env({"TACO_MODEL_SET": "tiny"}))
    assert list(sets.values()) == [TINY_SET]
    assert TINY_SET.allow_random and TINY_SET.taco == "taco-tiny"

    sets = resolve_model_sets(FakeBackend(), settings=Settings.from_env({}))
    assert sets["Fake"].taco == "taco-fake"

    class Empty(FakeBackend):
        def available_model_sets(self):
            return {}

    sets = resolve_model_sets(Empty(), settings=Settings.from_env({}))
    assert list(sets.values()) == [EMBEDDED_FALLBACK]


def test_pick_model_set():
    sets = {"Fake": FAKE_SET, "Fake ladder": LADDER_SET}
    assert pick_model_set("Fake ladder", sets) is LADDER_SET
    assert pick_model_set(None, sets) is FAKE_SET
    assert pick_model_set("taco-ladder", sets) is LADDER_SET
    assert pick_model_set(FAKE_SET, sets) is FAKE_SET
    with pytest.raises(TacoError, match="unknown model set"):
        pick_model_set("nope", sets)


# =============================================================================================
# run_compare
# =============================================================================================


def test_run_compare_basic(fake, img_path):
    seen = []
    res = run_compare(
        img_path,
        "  a  colourful   pattern ",
        50,
        model_set=FAKE_SET,
        backend=fake,
        progress=lambda f, d: seen.append((f, d)),
    )
    assert [r.row_id for r in res.runs] == ["taco", "elic"]
    assert res.caption == "a colourful pattern"
    assert res.name == "my_photo"
    assert res.image.shape == (96, 128, 3)
    taco = res.taco
    assert taco.bpp == pytest.approx(8 * len(taco.data) / (96 * 128))
    assert taco.recon.shape == res.image.shape and taco.recon.dtype == np.uint8
    assert 10 < taco.psnr < 60 and taco.lpips is not None and taco.ms_ssim is not None
    assert taco.lmbda == pytest.approx(1e-2, rel=1e-2)
    assert res.run("elic").lmbda == pytest.approx(taco.lmbda)
    assert seen and seen[-1][0] == 1.0 and all(0 <= f <= 1 for f, _ in seen)
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs)
    assert res.random_weights  # the fake says so


def test_run_compare_is_cached(fake, img_path):
    run_compare(img_path, "cap", 30, model_set=FAKE_SET, backend=fake)
    calls = fake.codecs["taco-fake"].calls
    run_compare(img_path, "cap", 30, model_set=FAKE_SET, backend=fake)
    assert fake.codecs["taco-fake"].calls == calls  # served from the LRU
    run_compare(img_path, "another caption", 30, model_set=FAKE_SET, backend=fake)
    assert fake.codecs["taco-fake"].calls == calls + 1
    run_compare(img_path, "cap", 30, model_set=FAKE_SET, backend=fake, use_cache=False)
    assert fake.codecs["taco-fake"].calls == calls + 2


def test_first_answer_skips_ms_ssim_and_the_second_adds_it_without_rescoring(fake, img_path,
                                                                              monkeypatch):
    """The page's first step (ms_ssim=False) has bpp, PSNR and LPIPS; the second step adds
    MS-SSIM from the cache without coding or computing LPIPS again."""
    calls = {"lpips": 0, "ms_ssim": 0}
    for name in calls:
        fn = getattr(fake, name)

        def counted(*a, _fn=fn, _name=name, **k):
            calls[_name] += 1
            return _fn(*a, **k)

        monkeypatch.setattr(fake, name, counted)
    import app.metrics

    def no_package_lpips(*a, **k):  # every LPIPS must go through the backend
        raise AssertionError("the package's LPIPS was called behind the backend's back")

    monkeypatch.setattr(app.metrics, "lpips", no_package_lpips)
    first = run_compare(img_path, "cap", 40, model_set=FAKE_SET, backend=fake, ms_ssim=False)
    assert all(r.ms_ssim is None and r.lpips is not None for r in first.runs)
    assert calls == {"lpips": 2, "ms_ssim": 0}
    coded = fake.codecs["taco-fake"].calls
    second = run_compare(img_path, "cap", 40, model_set=FAKE_SET, backend=fake)
    assert fake.codecs["taco-fake"].calls == coded
    assert calls == {"lpips": 2, "ms_ssim": 2}
    for a, b in zip(first.runs, second.runs, strict=True):
        assert (a.psnr, a.lpips, a.data) == (b.psnr, b.lpips, b.data) and b.ms_ssim is not None


def test_higher_rate_means_more_bits(fake, img_path):
    lo = run_compare(img_path, "", 0, model_set=FAKE_SET, backend=fake)
    hi = run_compare(img_path, "", 100, model_set=FAKE_SET, backend=fake)
    assert hi.taco.bpp > lo.taco.bpp
    assert hi.taco.psnr > lo.taco.psnr


def test_run_compare_rate_matched_rows_and_missing_codec_note(fake, img_path):
    res = run_compare(img_path, "cap", 40, model_set=FAKE_SET, backend=fake, rate_matched=True)
    ids = [r.row_id for r in res.runs]
    assert ids == ["taco", "elic", "elic@bpp", "jpeg@bpp", "webp@bpp"]
    assert any("AVIF unavailable" in n for n in res.notes)  # fake has no AVIF: a note, no crash
    for r in res.runs[2:]:
        assert "search" in r.setting
    # rate matching gets close to TACO's bpp (the fake's search is coarse)
    assert abs(res.run("jpeg@bpp").bpp - res.taco.bpp) / res.taco.bpp < 0.5


def test_run_compare_target_bpp(fake, img_path):
    free = run_compare(img_path, "", 50, model_set=FAKE_SET, backend=fake)
    res = run_compare(
        img_path, "", 50, model_set=FAKE_SET, backend=fake, target_bpp=free.taco.bpp * 0.6
    )
    assert res.taco.bpp < free.taco.bpp
    assert "target" in res.rate_text and "achieved" in res.rate_text
    assert res.lmbda == res.taco.lmbda  # ELIC follows TACO's searched λ
    with pytest.raises(TacoError, match="target bpp"):
        run_compare(img_path, "", 50, model_set=FAKE_SET, backend=fake, target_bpp=-1)


def test_run_compare_ladder(fake, img_path):
    res = run_compare(img_path, "x", 100, model_set=LADDER_SET, backend=fake)
    assert res.taco.lmbda == 0.09
    assert "fixed-rate" in res.rate_text
    # ELIC (continuous) is run at the ladder's λ, clamped to its own range
    assert res.run("elic").lmbda == pytest.approx(0.09)


def test_run_compare_without_elic_is_a_note(img_path):
    RESULTS_CACHE.clear()
    res = run_compare(img_path, "", 50, model_set=FAKE_SET, backend=FakeBackend(with_elic=False))
    assert [r.row_id for r in res.runs] == ["taco"]
    assert any("ELIC unavailable" in n for n in res.notes)
    maps = error_maps(res)
    assert maps is not None and "not available" in maps.right_label


def test_run_compare_errors_are_one_line_taco_errors(fake, tmp_path):
    with pytest.raises(ImageInputError):
        run_compare(None, "", 50, model_set=FAKE_SET, backend=fake)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageInputError) as info:
        run_compare(str(bad), "", 50, model_set=FAKE_SET, backend=fake)
    assert "\n" not in str(info.value)
    with pytest.raises(MissingModelError):
        run_compare(photo(), "", 50, model_set=ModelSet("x", "missing", None), backend=fake)
    with pytest.raises(TacoError, match="LPIPS convention"):
        run_compare(photo(), "", 50, model_set=FAKE_SET, backend=fake, lpips_convention="x")


def test_inputs_are_normalised(fake, tmp_path):
    # RGBA -> flattened on white, 16-bit grey -> 8-bit RGB, too large -> downscaled with a notice
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 0] = 200
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    res = run_compare(str(p), "", 50, model_set=FAKE_SET, backend=fake)
    assert res.image.shape == (40, 50, 3) and res.image[0, 0].tolist() == [255, 255, 255]
    assert any("transparency" in n for n in res.notices)

    g16 = (np.linspace(0, 65535, 30 * 20).reshape(30, 20)).astype(np.uint16)
    p16 = tmp_path / "g16.png"
    Image.fromarray(g16).save(p16)
    res = run_compare(str(p16), "", 50, model_set=FAKE_SET, backend=fake)
    assert res.image.shape == (30, 20, 3) and res.image.dtype == np.uint8

    big = tmp_path / "big.png"
    Image.fromarray(photo(400, max_side() + 200)).save(big)
    res = run_compare(str(big), "", 50, model_set=FAKE_SET, backend=fake)
    assert max(res.image.shape[:2]) == max_side()
    assert any("downscaled" in n for n in res.notices)
    assert "downscaled" in status_markdown(res)


def test_exif_orientation_is_applied(fake, tmp_path):
    arr = photo(40, 80)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° CW when displayed
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif.tobytes(), quality=95)
    res = run_compare(str(p), "", 50, model_set=FAKE_SET, backend=fake)
    assert res.image.shape[:2] == (80, 40)


# =============================================================================================
# Presentation
# =============================================================================================


def test_metrics_table_and_records(fake, img_path):
    res = run_compare(img_path, "c", 50, model_set=FAKE_SET, backend=fake, rate_matched=True)
    df = metrics_frame(res)
    assert list(df.columns) == METRIC_COLUMNS
    assert df["Codec"].tolist()[:2] == ["TACO", "ELIC (same λ)"]
    assert df["Bytes"].tolist()[0] == len(res.taco.data)
    recs = metrics_records(res)
    assert recs[0]["codec"] == "taco" and recs[0]["bpp"] == pytest.approx(res.taco.bpp)
    json.dumps(recs)  # JSON-serialisable for the API
    assert fmt(math.inf, 2) == "∞" and fmt(None, 2) == "–"


def test_slider_views(fake, img_path):
    res = run_compare(img_path, "c", 50, model_set=FAKE_SET, backend=fake)
    a, b = slider_pair(res, "TACO | ELIC")
    assert a is res.taco.recon and b is res.run("elic").recon
    a, b = slider_pair(res, "Original | TACO")
    assert a is res.image and b is res.taco.recon
    a, b = slider_pair(res, "TACO | ELIC @ TACO bpp")  # not computed: original + note
    assert b is res.image and "not computed" in view_note(res, "TACO | ELIC @ TACO bpp")
    assert view_note(res, "TACO | ELIC") == ""
    assert slider_pair(res, "garbage")[0] is res.taco.recon


def test_error_maps_share_one_scale(fake, img_path):
    res = run_compare(img_path, "c", 10, model_set=FAKE_SET, backend=fake)
    maps = error_maps(res)
    assert maps.left.shape == maps.right.shape == res.image.shape
    assert maps.left.dtype == np.uint8
    e_t = abs_diff(res.image, res.taco.recon)
    e_e = abs_diff(res.image, res.run("elic").recon)
    assert maps.vmax >= max(np.percentile(e_t, 99.5), np.percentile(e_e, 99.5))
    np.testing.assert_array_equal(maps.left, colorize(e_t, maps.vmax))
    np.testing.assert_array_equal(maps.right, colorize(e_e, maps.vmax))
    html = colorbar_html(maps.vmax)
    assert "linear-gradient" in html and f"{maps.vmax:g}" in html


def test_colormap_is_monotone_in_brightness():
    lum = HEAT_LUT @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(lum) >= -1e-9)
    assert colorize(np.array([[0.0, 1e9]]), 10.0).tolist()[0] == [
        HEAT_LUT[0].tolist(),
        HEAT_LUT[255].tolist(),
    ]


def test_status_markdown(fake, img_path):
    res = run_compare(img_path, "a caption", 50, model_set=FAKE_SET, backend=fake)
    md = status_markdown(res)
    assert "encoder only" in md and "0 bits" in md and "Random weights" in md
    res = run_compare(img_path, "", 50, model_set=FAKE_SET, backend=fake)
    assert "empty caption" in status_markdown(res)


def test_write_bitstreams_roundtrip(fake, img_path, tmp_path):
    res = run_compare(img_path, "c", 50, model_set=FAKE_SET, backend=fake)
    paths = write_bitstreams(res, tmp_path)
    assert set(paths) == {"taco", "elic"}
    assert paths["taco"].read_bytes() == res.taco.data
    assert paths["taco"].name.startswith("my_photo_taco_") and paths["taco"].suffix == ".taco"
    arr, info = decode_bitstream(str(paths["taco"]), fake)
    np.testing.assert_array_equal(arr, res.taco.recon)
    assert "without any caption" in info and "taco-fake" in info
    assert "bytes" in download_label(res, "taco")


def test_decode_rejects_garbage(fake, tmp_path):
    p = tmp_path / "x.taco"
    p.write_bytes(b"garbage!")
    with pytest.raises(BitstreamError):
        decode_bitstream(str(p), fake)
    with pytest.raises(BitstreamError):
        decode_bitstream(None, fake)


def test_decode_tab_refuses_huge_claims_before_any_model_runs(fake, tmp_path, monkeypatch):
    """A tiny file claiming a big image is refused from its header alone."""
    side = int((get_settings().ui_max_decode_pixels + 1) ** 0.5) + 1
    p = tmp_path / "big.taco"
    p.write_bytes(b"193 bytes that claim a big image")
    monkeypatch.setattr(fake, "read_header", lambda data: FakeHeader("taco-fake", b"\0" * 8, 0.01, side, side))
    monkeypatch.setattr(fake, "decompress", lambda data: pytest.fail("decoder ran"))
    with pytest.raises(BitstreamError, match=rf"{side}×{side} image; this demo decodes up to"):
        decode_bitstream(str(p), fake)


def test_input_notice_is_one_line(fake, img_path, tmp_path):
    assert input_notice(None, fake) == "" and input_notice("  ", fake) == ""
    text = input_notice(img_path, fake)
    assert text.startswith("128×96 px") and "\n" not in text
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"<not an image>")
    text = input_notice(str(bad), fake)
    assert text.startswith("**Cannot use this image:**") and "<" not in text and "\n" not in text


# =============================================================================================
# Captions
# =============================================================================================


def test_token_counter(fake):
    md = caption_token_markdown("a red cup", FAKE_SET, fake)
    assert "5 / 38 tokens" in md
    long = " ".join(["word"] * 50)
    md = caption_token_markdown(long, FAKE_SET, fake)
    assert "truncated" in md and "52 / 38" in md
    assert "Empty caption" in caption_token_markdown("   ", FAKE_SET, fake)

    class Broken(FakeBackend):
        def token_info(self, kind, caption):
            raise MissingModelError("tokenizer files missing")

    assert "unavailable" in caption_token_markdown("x", FAKE_SET, Broken())


def test_auto_caption_keeps_caption_when_unavailable(img_path):
    text, msg = auto_caption(img_path, "mine", FakeBackend(caption_ok=False))
    assert text == "mine" and "unavailable" in msg and "unchanged" in msg
    text, msg = auto_caption(img_path, "mine", FakeBackend(caption_ok=True))
    assert text == "a fake caption of a picture" and "BLIP" in msg
    text, msg = auto_caption(None, "mine", FakeBackend(caption_ok=True))
    assert text == "mine" and "failed" in msg


def test_caption_effect(fake, img_path):
    eff = run_caption_effect(
        img_path, "a colourful pattern", "a cat on a sofa", 50, model_set=FAKE_SET, backend=fake
    )
    assert [r.row_id for r in eff.runs] == list(CAPTION_ROWS)
    assert [r.caption for r in eff.runs] == ["a colourful pattern", "", "a cat on a sofa"]
    assert len({r.lmbda for r in eff.runs}) == 1  # same λ for all three
    rows = caption_effect_rows(eff)
    assert rows[0][3] == "—" and rows[1][3].endswith("%")
    df = caption_effect_frame(eff)
    assert list(df.columns) == CAPTION_COLUMNS
    maps = caption_diff_maps(eff)
    assert maps.vs_empty.shape == eff.image.shape
    a, b = caption_effect_pair(eff, "Your caption | second caption")
    assert a is eff.runs[0].recon and b is eff.runs[2].recon
    summary = caption_effect_summary(eff, maps)
    assert "only the caption changes" in summary
    assert "1 %" in CAPTION_EFFECT_NOTE and "0 bits" in CAPTION_EFFECT_NOTE


def test_caption_effect_identical_reconstructions(fake, img_path):
    eff = run_caption_effect(img_path, "", "", 50, model_set=FAKE_SET, backend=fake)
    maps = caption_diff_maps(eff)
    assert maps.max_empty == 0 and maps.max_second == 0
    summary = caption_effect_summary(eff, maps)
    assert summary.count("bit-identical") == 2 and "empty" in summary


# =============================================================================================
# Reference curves, plots, examples
# =============================================================================================


def test_parse_reference_json_shapes(tmp_path):
    compressai = {
        "name": "TACO (ours)",
        "results": {"bpp": [0.1, 0.2], "psnr": [28, 30], "lpips": [0.2, 0.1]},
    }
    multi = {
        "dataset": "Kodak",
        "models": {"ELIC": {"bpp": [0.1, 0.3], "psnr-rgb": [29, 32], "lpips_paper": [0.05, 0.03]}},
    }
    points = [
        {"model": "jpeg", "bpp": 0.5, "psnr": 30, "lpips": 0.3},
        {"model": "jpeg", "bpp": 0.2, "psnr": 26, "lpips": 0.5},
    ]
    (tmp_path / "a.json").write_text(json.dumps(compressai))
    (tmp_path / "b.json").write_text(json.dumps(multi))
    (tmp_path / "c.json").write_text(json.dumps({"points": points}))
    (tmp_path / "d.json").write_text("{not json")
    curves = load_reference_curves(tmp_path)
    names = [(c.name, c.lpips_convention) for c in curves]
    assert ("TACO (ours)", "standard") in names
    assert ("ELIC", "paper") in names
    jpeg = next(c for c in curves if c.name == "jpeg")
    assert jpeg.bpp == (0.2, 0.5) and jpeg.psnr == (26.0, 30.0)
    assert parse_reference_json("nonsense") == []
    summary = {  # the shape `python -m app eval` writes (summary.json)
        "image_dir": "/data/kodak",
        "codecs": {
            "taco": [
                {"rate": "0.004", "bpp": 0.2, "psnr": 29.0, "lpips": 0.1, "lpips_paper": 0.03},
                {"rate": "0.01", "bpp": 0.4, "psnr": 31.0, "lpips": 0.07, "lpips_paper": 0.02},
            ],
            "webp": [{"rate": "50", "bpp": 0.5, "psnr": 30.0, "lpips": None}],
        },
    }
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "summary.json").write_text(json.dumps(summary))
    curves = load_reference_curves(tmp_path)
    taco = [c for c in curves if c.name == "TACO"]
    assert {c.lpips_convention for c in taco} == {"standard", "paper"}
    assert taco[0].dataset == "Kodak" and taco[0].bpp == (0.2, 0.4)
    assert taco[0].source == "docs/results/sub/summary.json"
    webp = next(c for c in curves if c.name == "WebP")
    assert webp.lpips == () and webp.psnr == (30.0,)
    assert load_reference_curves(tmp_path / "missing") == []
    # the same codec in a second result folder is drawn once; other datasets only on request
    (tmp_path / "sub2").mkdir()
    (tmp_path / "sub2" / "summary.json").write_text(json.dumps(summary))
    coco = {**summary, "image_dir": "../shared/data/coco_val2017"}
    (tmp_path / "sub3").mkdir()
    (tmp_path / "sub3" / "summary.json").write_text(json.dumps(coco))
    curves = load_reference_curves(tmp_path)
    assert [c.source for c in curves if c.name == "TACO"] == ["docs/results/sub/summary.json"] * 2
    everything = load_reference_curves(tmp_path, dataset=None)
    assert {c.dataset for c in everything if c.name == "TACO"} == {"Kodak", "Coco_Val2017"}


def test_rd_figure(fake, img_path):
    res = run_compare(img_path, "c", 50, model_set=FAKE_SET, backend=fake, rate_matched=True)
    fig = plots.rd_figure(rd_points(res.runs), PUBLISHED_CURVES, "standard")
    names = {t.name for t in fig.data}
    assert "TACO (this image)" in names and "ELIC (same λ) (this image)" in names
    # published TACO LPIPS uses the paper convention: not drawn on the standard axis
    assert not any("Official TACO" in n for n in names)
    assert any("Official ELIC" in n for n in names)
    fig_p = plots.rd_figure(rd_points(res.runs), PUBLISHED_CURVES, "paper")
    assert any("Official TACO" in t.name for t in fig_p.data)
    empty = plots.empty_figure()
    assert empty.layout.annotations


def test_examples_assets_and_licences():
    ex = load_examples()
    assert len(ex) >= 6
    lic = (ROOT / "assets" / "LICENSES.md").read_text()
    for e in ex:
        assert e.caption and len(e.caption.split()) <= 30
        assert e.path.name in lic
        with Image.open(e.path) as im:
            assert max(im.size) <= 768
    assert "CC BY 2.0" in lic


def test_examples_cache_tag_changes_with_models(tmp_path):
    a = examples_cache_tag({"x": FAKE_SET}, tmp_path)
    b = examples_cache_tag({"x": LADDER_SET}, tmp_path)
    assert a != b and a == examples_cache_tag({"x": FAKE_SET}, tmp_path)


def test_lru_cache_evicts_oldest():
    c = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1
    c.put("c", 3)
    assert c.get("b") is None and c.get("a") == 1 and len(c) == 2


# =============================================================================================
# The real package with the tiny random models
# =============================================================================================


def _tiny_available() -> str | None:
    """For the UI wiring tests (test_ui_client, test_ui_browser), which fall back to the fake
    backend when the tiny models cannot be built; `tiny_backend` below is where that breakage
    fails a test."""
    try:
        from app.codecs import load_codec

        load_codec("taco-tiny", allow_random=True)
        load_codec("elic-tiny", allow_random=True)
    except Exception as exc:
        return f"tiny models unavailable: {first_line(exc)}"
    return None


@pytest.fixture(scope="module")
def tiny_backend() -> Backend:
    """The tiny models need no weights (random init), so a failure to build them is a failure."""
    from app.codecs import load_codec

    load_codec("taco-tiny", allow_random=True)
    load_codec("elic-tiny", allow_random=True)
    return PackageBackend()


def test_tiny_models_end_to_end(tiny_backend, tmp_path):
    RESULTS_CACHE.clear()
    img = tmp_path / "tiny.png"
    Image.fromarray(photo(64, 96)).save(img)
    res = run_compare(str(img), "a test pattern", 50, model_set=TINY_SET, backend=tiny_backend)
    assert [r.row_id for r in res.runs] == ["taco", "elic"]
    assert res.taco.recon.shape == (64, 96, 3)
    assert res.random_weights
    paths = write_bitstreams(res, tmp_path)
    arr, info = decode_bitstream(str(paths["taco"]), tiny_backend)
    np.testing.assert_array_equal(arr, res.taco.recon)  # decoded without the caption
    assert "taco-tiny" in info


def test_first_answer_shows_the_encoders_reconstruction_and_the_second_confirms_it(
        tiny_backend, tmp_path, monkeypatch):
    """Step 1 (early) skips the entropy decoding: no decode time yet; step 2 entropy-decodes the
    same files (no new encode) and the images are those the decoder gives."""
    from app.codecs import load_codec

    RESULTS_CACHE.clear()
    img = tmp_path / "tiny.png"
    Image.fromarray(photo(64, 96)).save(img)
    codecs = {n: load_codec(n, allow_random=True) for n in ("taco-tiny", "elic-tiny")}
    encodes, decodes = [], []
    for name, codec in codecs.items():
        enc, dec = codec.encode, codec.decompress
        monkeypatch.setattr(codec, "encode",
                            lambda *a, _f=enc, _n=name, **k: encodes.append(_n) or _f(*a, **k))
        monkeypatch.setattr(codec, "decompress",
                            lambda *a, _f=dec, _n=name, **k: decodes.append(_n) or _f(*a, **k))
    first = run_compare(str(img), "a test pattern", 50, model_set=TINY_SET, backend=tiny_backend,
                        ms_ssim=False, early=True)
    assert sorted(encodes) == ["elic-tiny", "taco-tiny"] and decodes == []
    assert all(r.decode_ms is None for r in first.runs)
    second = run_compare(str(img), "a test pattern", 50, model_set=TINY_SET, backend=tiny_backend)
    assert len(encodes) == 2 and decodes == []  # confirmed from the cache, not coded again
    for a, b in zip(first.runs, second.runs, strict=True):
        assert a.data == b.data and np.array_equal(a.recon, b.recon)
        assert b.decode_ms is not None and b.decode_ms > 0
        np.testing.assert_array_equal(np.asarray(codecs[b.codec_name].decompress(b.data)), a.recon)


def test_missing_weights_notice():
    class Empty(FakeBackend):
        def available_model_sets(self):
            return {}

    assert "No model weights" in missing_weights_notice(Empty(), settings=Settings.from_env({}))
    assert missing_weights_notice(Empty(), settings=Settings.from_env({"TACO_MODEL_SET": "tiny"})) == ""
    assert missing_weights_notice(FakeBackend(), settings=Settings.from_env({})) == ""
