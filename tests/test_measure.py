"""app.measure: the one encode → decode → score path of the UI, the evaluation and the bench."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from PIL import Image

from app import measure as M
from app.codecs.classical import get_classical_codec
from app.codecs.protocol import Capabilities, Encoded, RateControl
from app.errors import TacoError
from app.metrics import psnr


@pytest.fixture()
def image(photo) -> np.ndarray:
    return photo(64, 96)


def test_jpeg_measurement_is_the_real_file_and_its_numbers(image) -> None:
    img = image
    jpeg = get_classical_codec("jpeg")
    m = M.measure(jpeg, img, rate=40)
    assert m.coded.data == jpeg.compress(img, lmbda=40)  # the same bytes as the codec writes
    assert m.n_bytes == len(m.coded.data) and m.bpp == pytest.approx(8 * m.n_bytes / (64 * 96))
    assert m.coded.rate == 40.0 and m.coded.recon.dtype == np.uint8
    assert m.scores.psnr == pytest.approx(psnr(img, m.coded.recon))
    assert m.scores.psnr_float == pytest.approx(m.scores.psnr)  # 8-bit output: the same PSNR
    assert 0 < m.scores.ms_ssim <= 1 and m.scores.ms_ssim_resized  # 64 px < 160 px: resized
    assert 0 <= m.scores.lpips < 1 and 0 <= m.scores.lpips_paper < 1
    assert m.scores.lpips != m.scores.lpips_paper
    assert m.coded.encode_ms > 0 and m.coded.decode_ms > 0


def test_learned_float_psnr_comes_from_the_unclamped_decoder_output(image, tiny_elic) -> None:
    img = image
    codec = tiny_elic
    assert codec.capabilities.float_decode
    m = M.measure(codec, img, rate=codec.rate_range[0])
    x_hat = codec.decompress_float(m.coded.data)
    assert m.scores.psnr_float == pytest.approx(
        -10 * math.log10(np.mean((img / 255.0 - x_hat.astype(np.float64)) ** 2)))
    assert m.coded.rate == pytest.approx(codec.rate_range[0], rel=1e-6)


def test_timing_metrics_skip_everything_but_psnr(image) -> None:
    m = M.measure(get_classical_codec("webp"), image, rate=70, metrics=M.TIMING)
    s = m.scores
    assert math.isfinite(s.psnr)
    assert (s.psnr_float, s.ms_ssim, s.lpips, s.lpips_paper) == (None, None, None, None)
    assert not s.ms_ssim_resized


def test_injected_metric_functions_are_used(image) -> None:
    calls: list[str] = []
    metrics = M.Metrics(
        psnr_float=False, lpips_paper=False,
        psnr_fn=lambda a, b: calls.append("psnr") or 1.0,
        ms_ssim_fn=lambda a, b: calls.append("ms") or 0.5,
        lpips_fn=lambda a, b, convention: calls.append(convention) or 0.25,
    )
    s = M.measure(get_classical_codec("jpeg"), image, rate=50, metrics=metrics).scores
    assert (s.psnr, s.ms_ssim, s.lpips, s.lpips_paper) == (1.0, 0.5, 0.25, None)
    assert calls == ["psnr", "ms", "standard"]


class _Shrinking:
    """A codec whose decoder returns half the image: `code` must refuse it."""

    name = "shrink"
    description = "test codec"
    capabilities = Capabilities(learned=False, rate=RateControl.quality(1, 100, 75))
    rate_range = (1.0, 100.0)
    rate_ladder = None

    def encode(self, image, caption="", lmbda=None, target_bpp=None) -> Encoded:
        return Encoded(b"x", image.shape[0], image.shape[1], lmbda, 0.0)

    def decompress(self, data: bytes) -> Image.Image:
        return Image.new("RGB", (8, 8))


def test_a_reconstruction_of_another_size_is_an_error(image) -> None:
    with pytest.raises(TacoError, match="returned a 8x8 image for a 96x64 input"):
        M.code(_Shrinking(), image)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- early reconstruction


@pytest.mark.parametrize("coding", ["portable", "portable-full", "float"])
@pytest.mark.parametrize("which", ["tiny_elic", "tiny_taco"])
def test_early_reconstruction_is_the_decoded_image(image, which, coding, request) -> None:
    """The encoder's own ŷ through g_s gives exactly what decoding the file gives here."""
    from app.codecs import LearnedCodec

    base = request.getfixturevalue(which)
    codec = LearnedCodec(base.name, base._variants, coding=coding)  # same weights, other path
    for lam in (codec.rate_range[0], codec.rate_range[1]):
        early = M.code(codec, image, "a caption", lam, early=True)
        assert not early.verified
        full = M.code(codec, image, "a caption", lam)
        assert full.verified and full.data == early.data
        assert np.array_equal(early.recon, full.recon)
        done = M.confirm(codec, early)
        assert done.verified and done.decode_ms > early.decode_ms
        assert dataclasses.replace(done, decode_ms=0, encode_ms=0) == dataclasses.replace(
            early, decode_ms=0, encode_ms=0, verified=True)


def test_confirm_refuses_a_file_whose_symbols_differ(image, tiny_elic) -> None:
    from app import bitstream
    from app.errors import BitstreamError

    early = M.code(tiny_elic, image, "", tiny_elic.rate_range[1], early=True)
    header, strings = bitstream.unpack(early.data)
    y = bytearray(strings[0])
    y[len(y) // 2] ^= 0x5A  # the symbols now decode to something else
    forged = bitstream.pack(header, [bytes(y), strings[1]])
    with pytest.raises(BitstreamError):
        M.confirm(tiny_elic, dataclasses.replace(early, data=forged))


def test_early_is_an_ordinary_coding_where_the_codec_cannot_do_it(image, tiny_elic) -> None:
    jpeg = M.code(get_classical_codec("jpeg"), image, rate=40, early=True)
    assert jpeg.verified  # classical: decoded as usual
    search = M.code(tiny_elic, image, target_bpp=0.5, early=True)
    assert search.verified  # a bpp search: decoded as usual
