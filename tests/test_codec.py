"""The Codec API and CLI on tiny random models: real bitstreams, padding, rate control, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from app import bitstream
from app.cli import main as cli_main
from app.codecs import LearnedCodec, decompress, load_codec, read_header
from app.errors import BitstreamError, MissingModelError


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    rng = np.random.default_rng(1)
    base = np.linspace(0, 255, 70 * 90).reshape(70, 90)
    arr = np.stack([base, base[::-1], np.full_like(base, 128)], axis=2)
    return np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def elic(tiny_elic) -> LearnedCodec:
    assert isinstance(tiny_elic, LearnedCodec)
    return tiny_elic


@pytest.fixture(scope="module")
def taco(tiny_taco) -> LearnedCodec:
    assert isinstance(tiny_taco, LearnedCodec)
    return tiny_taco


def test_round_trip_crops_back_and_reports_real_bpp(elic, img):
    enc = elic.encode(img, lmbda=elic.rate_range[0])
    rec = decompress(enc.data)
    assert isinstance(rec, Image.Image) and rec.size == (90, 70) and rec.mode == "RGB"
    assert enc.bpp == pytest.approx(8 * len(enc.data) / (70 * 90))
    h = read_header(enc.data)
    assert (h.model_id, h.height, h.width) == ("elic-tiny", 70, 90)


def test_decoding_is_deterministic_and_matches_codec_method(elic, img):
    data = elic.compress(img)
    a = np.asarray(decompress(data))
    b = np.asarray(elic.decompress(data))
    assert np.array_equal(a, b)


def test_taco_needs_no_caption_to_decode(taco, img):
    data = taco.compress(img, caption="a gradient with some noise")
    rec = decompress(data)  # no caption anywhere
    assert rec.size == (90, 70)
    assert b"gradient" not in data


def test_caption_changes_encoder_not_format(taco, img):
    a = taco.compress(img, caption="")
    b = taco.compress(img, caption="a completely different description of a cat")
    assert read_header(a).model_id == read_header(b).model_id == "taco-tiny"


def test_lambda_is_clamped_and_float32_exact(elic, img):
    lo, hi = elic.rate_range
    h = read_header(elic.compress(img, lmbda=hi * 10))
    assert h.lmbda == pytest.approx(hi, rel=1e-6)


def test_target_bpp_search_returns_closest(elic, img):
    enc_lo = elic.encode(img, lmbda=elic.rate_range[0])
    enc_hi = elic.encode(img, lmbda=elic.rate_range[1])
    target = 0.5 * (enc_lo.bpp + enc_hi.bpp)
    enc = elic.encode(img, target_bpp=target)
    best = min(abs(enc_lo.bpp - target), abs(enc_hi.bpp - target))
    assert abs(enc.bpp - target) <= best + 1e-9


def test_wrong_model_bitstream_is_refused(elic, taco, img):
    data = taco.compress(img)
    with pytest.raises(BitstreamError, match="made by"):
        elic.decompress(data)


def test_foreign_weights_are_detected(elic, img):
    data = elic.compress(img)
    h, strings = bitstream.unpack(data)
    forged = bitstream.pack(dataclasses.replace(h, fingerprint=b"\x00" * 8), strings)
    with pytest.raises(BitstreamError, match="other"):
        decompress(forged)


def test_embedded_model_without_weights_fails_clearly(monkeypatch, tmp_path):
    from app.codecs import registry
    from app.settings import use_settings

    monkeypatch.setattr(registry, "_CACHE", {})
    with use_settings(checkpoint_dir=tmp_path, allow_random=False):
        with pytest.raises(MissingModelError, match="TACO_ALLOW_RANDOM"):
            registry.load_codec("elic")


def test_official_without_files_fails_clearly(monkeypatch, tmp_path):
    from app.codecs import registry
    from app.settings import use_settings

    monkeypatch.setattr(registry, "_CACHE", {})
    with use_settings(official_dir=tmp_path / "official"):
        with pytest.raises(MissingModelError, match="lambda_"):
            registry.load_codec("taco-official")


# ----------------------------------------------------------------------------------------- CLI


def test_cli_round_trip(tmp_path, img, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(img).save(src)
    out = tmp_path / "x.taco"
    rc = cli_main(["compress", str(src), "-o", str(out), "--model", "taco-tiny", "--allow-random",
                   "--caption", "stripes"])
    assert rc == 0, capsys.readouterr().err
    assert "bpp" in capsys.readouterr().out
    rc = cli_main(["decompress", str(out), "-o", str(tmp_path / "rec.png"), "--allow-random"])
    assert rc == 0
    assert Image.open(tmp_path / "rec.png").size == (90, 70)
    assert cli_main(["info", str(out)]) == 0
    assert "model=taco-tiny" in capsys.readouterr().out


def test_cli_says_when_lambda_is_clamped(tmp_path, img, capsys, taco):
    src = tmp_path / "in.png"
    Image.fromarray(img).save(src)
    argv = ["compress", str(src), "-o", str(tmp_path / "x.taco"), "--model", "taco-tiny", "--allow-random"]
    lo, hi = taco.rate_range
    assert cli_main([*argv, "--lmbda", "5"]) == 0
    captured = capsys.readouterr()
    assert f"note: λ 5 is not offered by taco-tiny (range {lo:g}–{hi:g}); used {hi:.6g}" in captured.err
    assert f"λ={hi:.6g}" in captured.out
    assert cli_main([*argv, "--lmbda", f"{hi:.6g}"]) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["compress", "missing.png", "-o", "x.taco"], "no such file"),
        (["decompress", "missing.taco", "-o", "x.png"], "no such file"),
        (["compress", "{bad}", "-o", "x.taco", "--model", "nope"], "unknown codec"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    if "{bad}" in argv:
        Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
        argv = [a.replace("{bad}", "ok.png") for a in argv]
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_corrupted_bitstream(tmp_path, capsys):
    bad = tmp_path / "bad.taco"
    bad.write_bytes(b"TACO\x01garbage")
    assert cli_main(["decompress", str(bad), "-o", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_device_is_validated_and_cpu_is_the_default(elic, img):
    import torch

    from app.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown device|device must be"):
        load_codec("elic-tiny", allow_random=True, device="tpu")
    explicit = load_codec("elic-tiny", allow_random=True, device="cpu")
    assert explicit is elic and elic.device == "cpu"  # one cache entry for the same device
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            load_codec("elic-tiny", allow_random=True, device="cuda")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["elic-tiny", "taco-tiny"])
def test_cuda_encoded_portable_file_decodes_on_cpu(name, img):
    gpu = load_codec(name, allow_random=True, device="cuda")
    cpu = load_codec(name, allow_random=True)
    data = gpu.compress(img, "a caption", lmbda=gpu.rate_range[1])
    assert read_header(data).coding == "portable"
    on_cpu = np.asarray(cpu.decompress(data)).astype(int)  # raises if the symbols differ
    on_gpu = np.asarray(gpu.decompress(data)).astype(int)
    diff = np.abs(on_cpu - on_gpu)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01
