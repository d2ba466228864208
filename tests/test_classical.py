"""Classical codecs (JPEG, WebP, AVIF) behind the Codec protocol."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from app.codecs.classical import (
    CLASSICAL_CODECS,
    JpegCodec,
    get_classical_codec,
    is_classical,
)
from app.errors import BitstreamError, ConfigError, ImageInputError
from app.metrics import psnr


@pytest.fixture(scope="module")
def image(photo) -> np.ndarray:
    return photo(96, 128)


@pytest.mark.parametrize("name", CLASSICAL_CODECS)
def test_protocol_and_round_trip(name, image):
    codec = get_classical_codec(name)
    assert codec.name == name and is_classical(name.upper())
    assert codec.rate_range == (1.0, 100.0) and codec.rate_ladder is None
    data = codec.compress(image, caption="ignored", lmbda=80)
    assert isinstance(data, bytes) and len(data) > 0
    out = codec.decompress(data)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (128, 96)
    assert psnr(image, out) > 25
    # PIL input (any mode) gives the same bytes as the array
    assert codec.compress(Image.fromarray(image), lmbda=80) == data
    assert codec.compress(image) == codec.compress(image, lmbda=codec.default_quality)


@pytest.mark.parametrize("name", CLASSICAL_CODECS)
def test_quality_orders_size(name, image):
    codec = get_classical_codec(name)
    sizes = [len(codec.compress(image, lmbda=q)) for q in (5, 50, 95)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_jpeg_uses_420_subsampling(image):
    from PIL import JpegImagePlugin

    data = JpegCodec().compress(image, lmbda=75)
    with Image.open(io.BytesIO(data)) as im:
        assert JpegImagePlugin.get_sampling(im) == 2  # 2 = 4:2:0


@pytest.mark.parametrize("name", CLASSICAL_CODECS)
def test_target_bpp_picks_the_closest_bracket(name, image):
    codec = get_classical_codec(name)
    pixels = image.shape[0] * image.shape[1]
    target = 1.5
    data, q = codec.compress_to_bpp(image, target)
    got = 8 * len(data) / pixels
    assert codec.compress(image, target_bpp=target, lmbda=10) == data  # target wins over lmbda
    below = [8 * len(codec.encode_quality(image, k)) / pixels for k in (q - 1, q, q + 1) if 1 <= k <= 100]
    # no neighbouring quality is closer to the target
    assert all(abs(got - target) <= abs(b - target) + 1e-12 for b in below)


def test_target_bpp_out_of_reach(image):
    codec = get_classical_codec("jpeg")
    _, q = codec.compress_to_bpp(image, 1e-3)
    assert q == 1
    _, q = codec.compress_to_bpp(image, 1e3)
    assert q == 100
    with pytest.raises(ConfigError):
        codec.compress_to_bpp(image, 0.0)


def test_target_bpp_matches_brute_force_for_jpeg(image):
    codec = get_classical_codec("jpeg")
    pixels = image.shape[0] * image.shape[1]
    rates = {q: 8 * len(codec.encode_quality(image, q)) / pixels for q in range(1, 101)}
    for target in (0.8, 2.0, 3.3):
        _, q = codec.compress_to_bpp(image, target)
        best = min(abs(r - target) for r in rates.values())
        assert abs(rates[q] - target) == pytest.approx(best, abs=0.05 * target)


@pytest.mark.parametrize("name", CLASSICAL_CODECS)
def test_bad_bitstreams(name, image):
    codec = get_classical_codec(name)
    data = codec.compress(image, lmbda=50)
    for bad in (b"", b"garbage" * 20, data[: len(data) // 3]):
        with pytest.raises(BitstreamError):
            codec.decompress(bad)
    other = "webp" if name != "webp" else "jpeg"
    with pytest.raises(BitstreamError):  # another format's file is refused
        codec.decompress(get_classical_codec(other).compress(image))


def test_bad_inputs_and_names(image):
    codec = get_classical_codec("jpeg")
    for bad in (image.astype(np.float32), image[..., :2], np.zeros((0, 4, 3), np.uint8), "x"):
        with pytest.raises(ImageInputError):
            codec.compress(bad)
    for q in (0, 101, -5):
        with pytest.raises(ConfigError):
            codec.compress(image, lmbda=q)
    with pytest.raises(ConfigError):
        get_classical_codec("bpg")
    assert get_classical_codec("JPEG") is get_classical_codec("jpeg")
    assert not is_classical("taco")


def record_encodes(codec, monkeypatch) -> list[int]:
    """The qualities ``codec`` encodes from now on, in order (restored after the test)."""
    qualities: list[int] = []
    original = codec.encode_quality

    def counted(pil, q):
        qualities.append(q)
        return original(pil, q)

    monkeypatch.setattr(codec, "encode_quality", counted)
    return qualities


@pytest.mark.parametrize("name", CLASSICAL_CODECS)
def test_target_bpp_search_finds_the_bisection_bracket(name, image, monkeypatch):
    """The seeded search returns exactly what the bracket rule gives on all 100 qualities (the
    slope seed changes how many encodes it takes, never the answer), in few encodes."""
    codec = get_classical_codec(name)
    pixels = image.shape[0] * image.shape[1]
    rates = {q: 8 * len(codec.encode_quality(image, q)) / pixels for q in range(1, 101)}
    encodes = record_encodes(codec, monkeypatch)
    n = []
    targets = np.geomspace(rates[1] * 0.8, rates[100] * 1.2, 9)
    for target in targets:
        codec.forget_images()  # a first search on this image
        encodes.clear()
        _, q = codec.compress_to_bpp(image, float(target))
        n.append(len(encodes))
        assert q == bracket_rule(rates, target), target
    assert max(n) <= 10 and sum(n) / len(n) <= 7
    # with every earlier search's encodes kept, in another order: the same answers, fewer encodes
    encodes.clear()
    for target in targets[::-1]:
        _, q = codec.compress_to_bpp(image, float(target))
        assert q == bracket_rule(rates, target), target
    assert len(encodes) < sum(n)
    codec.forget_images()


def bracket_rule(rates: dict[int, float], target: float) -> int:
    """The module's rule on the full curve: the closer of the bracket's two qualities."""
    lo = max((k for k in rates if rates[k] <= target), default=1)
    hi = min(lo + 1, 100)
    if rates[lo] >= target and lo == 1:
        return 1
    if rates[hi] <= target:
        return hi
    return lo if target - rates[lo] <= rates[hi] - target else hi


@pytest.mark.parametrize("name", CLASSICAL_CODECS)
def test_target_bpp_search_reuses_the_images_kept_encodes(name, image, monkeypatch):
    """A search for a nearby bpp on the same image (the UI's ELIC bpp, then TACO's) gives what a
    first search gives, with fewer encodes; other image content starts afresh."""
    codec = get_classical_codec(name)
    pixels = image.shape[0] * image.shape[1]
    base = 8 * len(codec.encode_quality(image, 50)) / pixels
    targets = (base, base * 0.99, base * 1.01, base * 0.5)
    encodes = record_encodes(codec, monkeypatch)
    cold = {}
    for target in targets:
        codec.forget_images()
        encodes.clear()
        cold[target] = codec.compress_to_bpp(image, target), len(encodes)
    codec.forget_images()
    codec.compress_to_bpp(image, base)
    for target in targets:
        encodes.clear()
        assert codec.compress_to_bpp(image, target) == cold[target][0], target
        assert len(encodes) < cold[target][1] or target == base * 0.5, (target, encodes)
    other = image.copy()
    other[0, 0] ^= 1
    encodes.clear()
    codec.compress_to_bpp(other, 0.6)
    assert len(encodes) >= 2
    codec.forget_images()


@pytest.mark.parametrize("name", CLASSICAL_CODECS)
def test_target_bpp_search_starts_on_the_codecs_typical_curve(name, image, monkeypatch):
    """The first probe is the quality where the codec's typical rate curve meets the target."""
    codec = get_classical_codec(name)
    probes = record_encodes(codec, monkeypatch)
    for q, bpp in codec.typical_rate[2:-2]:
        codec.forget_images()
        probes.clear()
        codec.compress_to_bpp(image, bpp)
        assert probes[0] == q
    assert codec._curve_quality(math.log(codec.typical_rate[0][1]) - 1) == codec.typical_rate[0][0]
    assert codec._curve_log_bpp(1000) == pytest.approx(math.log(codec.typical_rate[-1][1]))
